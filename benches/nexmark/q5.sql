-- Nexmark q5: hot items. The auctions with the most bids in each 10-second
-- window sliding every 2 seconds. Written as three statements: the counts,
-- the largest count per window, and the counts that equal it.
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM counts AS
SELECT auction, _window_start AS starttime, COUNT(*) AS num
FROM bid GROUP BY auction WINDOW SLIDING(datetime, 10s, 2s);
CREATE TABLE top_counts AS
SELECT starttime, MAX(num) AS maxn FROM counts GROUP BY starttime;
CREATE STREAM q5 AS
SELECT c.auction, c.num, c.starttime
FROM counts c JOIN top_counts t ON c.starttime = t.starttime AND c.num = t.maxn;
