-- Nexmark q5 as one statement (the RisingWave suite's form): sliding counts
-- per auction joined with the largest count of the same window, itself an
-- aggregation over a windowed subquery.
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM q5 AS
SELECT AuctionBids.auction, AuctionBids.num, AuctionBids.starttime
FROM (
  SELECT auction, COUNT(*) AS num, window_start AS starttime
  FROM TABLE(HOP(TABLE bid, DESCRIPTOR(datetime), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
  GROUP BY auction, window_start, window_end
) AS AuctionBids
JOIN (
  SELECT MAX(CountBids.num) AS maxn, CountBids.starttime_c
  FROM (
    SELECT COUNT(*) AS num, window_start AS starttime_c
    FROM TABLE(HOP(TABLE bid, DESCRIPTOR(datetime), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
    GROUP BY auction, window_start, window_end
  ) AS CountBids
  GROUP BY CountBids.starttime_c
) AS MaxBids
ON AuctionBids.starttime = MaxBids.starttime_c AND AuctionBids.num >= MaxBids.maxn;
