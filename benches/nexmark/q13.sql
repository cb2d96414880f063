-- Nexmark q13: bounded side input join. Each bid joined with the value of
-- its auction id modulo 10,000 in a fixed side table (side_input.csv).
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM q13 AS
SELECT b.auction, b.bidder, b.price, b.datetime, s.value
FROM bid b JOIN side_input s ON b.auction % 10000 = s.key
WITH ('side_input.type' = 'file_source', 'side_input.path' = 'side_input.csv', 'side_input.format' = 'csv');
