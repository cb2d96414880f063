-- Nexmark q7: highest bid. The bids with the highest price in each
-- 10-second tumbling window.
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM window_max AS
SELECT _window_start AS starttime, _window_end AS endtime, MAX(price) AS maxprice
FROM bid WINDOW TUMBLING(datetime, 10s);
CREATE STREAM q7 AS
SELECT b.auction, b.price, b.bidder, b.datetime
FROM bid b JOIN window_max m ON b.price = m.maxprice
WHERE b.datetime >= m.starttime AND b.datetime < m.endtime;
