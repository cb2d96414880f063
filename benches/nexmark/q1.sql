-- Nexmark q1: currency conversion. Bid prices from dollars to euros (exact decimals).
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM q1 AS SELECT auction, bidder, 0.908 * price AS price, datetime, extra FROM bid;
