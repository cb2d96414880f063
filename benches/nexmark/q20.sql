-- Nexmark q20: expand bid with auction. Bids with the details of their
-- auction, for auctions of category 10 (auctions are the table side).
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM auction (id BIGINT, itemname VARCHAR, description VARCHAR, initialbid BIGINT, reserve BIGINT,
  datetime TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra VARCHAR)
  WITH ('auction.type' = 'nexmark');
CREATE STREAM q20 AS
SELECT b.auction, b.bidder, b.price, b.channel, b.url, b.datetime,
       a.itemname, a.description, a.initialbid, a.reserve, a.datetime AS auction_datetime,
       a.expires, a.seller, a.category
FROM bid b JOIN auction a ON b.auction = a.id WHERE a.category = 10;
