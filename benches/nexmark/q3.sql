-- Nexmark q3: local item suggestion. Sellers in OR, ID or CA of auctions in
-- category 10. Persons are the table side: every auction meets its seller.
CREATE STREAM auction (id BIGINT, itemname VARCHAR, description VARCHAR, initialbid BIGINT, reserve BIGINT,
  datetime TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra VARCHAR)
  WITH ('auction.type' = 'nexmark');
CREATE STREAM person (id BIGINT, name VARCHAR, emailaddress VARCHAR, creditcard VARCHAR, city VARCHAR, state VARCHAR,
  datetime TIMESTAMP, extra VARCHAR)
  WITH ('person.type' = 'nexmark');
CREATE STREAM q3 AS
SELECT p.name, p.city, p.state, a.id
FROM auction a JOIN person p ON a.seller = p.id
WHERE a.category = 10 AND (p.state = 'OR' OR p.state = 'ID' OR p.state = 'CA');
