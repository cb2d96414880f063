-- Nexmark q10: log to file system. Every bid with its day and minute as text
-- (the reference writes them partitioned by these; here they are columns).
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM q10 AS
SELECT auction, bidder, price, datetime, extra,
       to_char(datetime, '%Y-%m-%d') AS dt, to_char(datetime, '%H:%M') AS hm
FROM bid;
