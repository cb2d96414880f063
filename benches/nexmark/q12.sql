-- Nexmark q12: processing-time windows. Bids per bidder in 10-second windows
-- of processing (wall-clock) time rather than event time.
CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
  WITH ('bid.type' = 'nexmark');
CREATE STREAM q12 AS
SELECT bidder, COUNT(*) AS bid_count, _window_start AS starttime, _window_end AS endtime
FROM bid GROUP BY bidder WINDOW TUMBLING(PROCTIME(), 10s);
