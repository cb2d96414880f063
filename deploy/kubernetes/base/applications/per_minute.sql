-- Per-minute volume per symbol, from the `trades` topic to `trades_per_minute`.
-- The application the deployment runs; replace it with your own (keep the
-- file name in config/kubernetes.yaml in step). The source sets no
-- 'group.id': the consumer group comes from the deployment
-- (velostream.kafka.group_id, one per colour in the overlays).

CREATE STREAM trades (
    symbol VARCHAR,
    price DECIMAL(12, 2),
    quantity BIGINT,
    ts TIMESTAMP
) WITH (
    'trades.type' = 'kafka_source',
    'trades.topic' = 'trades',
    'trades.event.time.field' = 'ts',
    'trades.watermark.max_out_of_orderness' = '5s'
);

CREATE STREAM trades_per_minute AS
SELECT symbol PRIMARY KEY,
       _window_end AS minute_end,
       COUNT(*) AS trades,
       SUM(quantity) AS volume,
       SUM(price * quantity) AS notional
FROM trades
GROUP BY symbol
WINDOW TUMBLING(ts, 1m)
WITH (
    'trades_per_minute.type' = 'kafka_sink',
    'trades_per_minute.topic' = 'trades_per_minute'
);
