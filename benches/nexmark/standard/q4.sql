-- Nexmark q4 as one statement (the Flink suite's form): the winning bid of
-- each auction is a derived table, which the planner runs as a table of its
-- own (latest row per auction) that the average reads.
CREATE STREAM auction (id BIGINT, itemname VARCHAR, description VARCHAR, initialbid BIGINT, reserve BIGINT,
  datetime TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra VARCHAR)
  WITH ('auction.type' = 'nexmark');
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM q4 AS
SELECT Q.category, AVG(Q.final) AS avg_final
FROM (
  SELECT MAX(B.price) AS final, A.category
  FROM bid B JOIN auction A ON B.auction = A.id AND B.datetime BETWEEN A.datetime AND A.expires
  GROUP BY A.id, A.category
) Q
GROUP BY Q.category EMIT FINAL;
