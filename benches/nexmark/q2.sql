-- Nexmark q2: selection. Bids on a set of auctions.
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM q2 AS SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0;
