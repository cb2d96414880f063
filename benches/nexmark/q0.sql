-- Nexmark q0: pass-through. Every bid, unchanged.
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM q0 AS SELECT auction, bidder, price, datetime, extra FROM bid;
