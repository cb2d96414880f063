-- Nexmark q4: average closing price per category. The winning (highest)
-- bid of each auction among the bids made while it was open, averaged per
-- category. Auctions are the table side of the join; the winning bids are
-- a table (latest per auction) that the average reads.
CREATE STREAM auction (id BIGINT, itemname VARCHAR, description VARCHAR, initialbid BIGINT, reserve BIGINT,
  datetime TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra VARCHAR)
  WITH ('auction.type' = 'nexmark');
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE TABLE winning AS
SELECT a.id, a.category, MAX(b.price) AS final
FROM bid b JOIN auction a ON b.auction = a.id AND b.datetime BETWEEN a.datetime AND a.expires
GROUP BY a.id, a.category;
CREATE STREAM q4 AS
SELECT category, AVG(final) AS avg_final FROM winning GROUP BY category EMIT FINAL;
