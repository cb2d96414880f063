-- Nexmark q7 as one statement (the RisingWave suite's form): bids joined with
-- the highest price of their 10-second window, a windowed derived table.
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM q7 AS
SELECT B.auction, B.price, B.bidder, B.datetime
FROM bid B
JOIN (
  SELECT MAX(price) AS maxprice, window_start AS starttime, window_end AS endtime
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(datetime), INTERVAL '10' SECOND))
  GROUP BY window_start, window_end
) B1 ON B.price = B1.maxprice
WHERE B.datetime >= B1.starttime AND B.datetime < B1.endtime;
