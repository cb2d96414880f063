-- Nexmark q8: monitor new users. People who created an auction in the same
-- 10-second tumbling window in which they registered.
CREATE STREAM person (id BIGINT, name VARCHAR, emailaddress VARCHAR, creditcard VARCHAR, city VARCHAR, state VARCHAR,
  datetime TIMESTAMP, extra VARCHAR)
  WITH ('person.type' = 'nexmark');
CREATE STREAM auction (id BIGINT, itemname VARCHAR, description VARCHAR, initialbid BIGINT, reserve BIGINT,
  datetime TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra VARCHAR)
  WITH ('auction.type' = 'nexmark');
CREATE STREAM new_people AS
SELECT id, name, _window_start AS starttime
FROM person GROUP BY id, name WINDOW TUMBLING(datetime, 10s);
CREATE STREAM new_sellers AS
SELECT seller, _window_start AS starttime
FROM auction GROUP BY seller WINDOW TUMBLING(datetime, 10s);
CREATE STREAM q8 AS
SELECT p.id, p.name, p.starttime
FROM new_people p JOIN new_sellers s ON p.id = s.seller AND p.starttime = s.starttime;
