-- Nexmark q11: user sessions. Bids per bidder in sessions that end after
-- 10 seconds without a bid.
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM q11 AS
SELECT bidder, COUNT(*) AS bid_count, _window_start AS starttime, _window_end AS endtime
FROM bid GROUP BY bidder WINDOW SESSION(datetime, 10s);
