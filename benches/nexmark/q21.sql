-- Nexmark q21: add channel id. The id of the four known channels, else the
-- channel_id parameter of the bid's URL.
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM q21 AS
SELECT auction, bidder, price, channel,
       CASE WHEN lower(channel) = 'apple' THEN '0'
            WHEN lower(channel) = 'google' THEN '1'
            WHEN lower(channel) = 'facebook' THEN '2'
            WHEN lower(channel) = 'baidu' THEN '3'
            ELSE regexp_replace(url, '^.*(&|\?)channel_id=([^&]*).*$', '\2') END AS channel_id
FROM bid
WHERE regexp_like(url, '(&|\?)channel_id=') OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu');
