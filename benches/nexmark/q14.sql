-- Nexmark q14: calculation. Prices in euros within a range, the time of day
-- of each bid, and how many 'c' its extra field holds.
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM q14 AS
SELECT auction, bidder, 0.908 * price AS price,
       CASE WHEN date_part('hour', datetime) >= 8 AND date_part('hour', datetime) <= 18 THEN 'dayTime'
            WHEN date_part('hour', datetime) <= 6 OR date_part('hour', datetime) >= 20 THEN 'nightTime'
            ELSE 'otherTime' END AS bidtimetype,
       datetime, extra, length(extra) - length(replace(extra, 'c', '')) AS c_counts
FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000;
