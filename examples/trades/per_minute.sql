-- Per-minute trading by sector: trades enriched with the symbols table,
-- aggregated in one-minute event-time windows, emitted when each minute closes.
--
--   velostream run examples/trades/per_minute.sql

CREATE STREAM trades (
    trade_id BIGINT,
    symbol   VARCHAR,
    side     VARCHAR,
    price    DECIMAL(12, 2),
    quantity BIGINT,
    trader   VARCHAR,
    ts       TIMESTAMP
) WITH ('type' = 'file_source', 'path' = 'data/trades.jsonl',
        'watermark.max_out_of_orderness' = '5s');

-- @name: sector_minutes
SELECT s.sector,
       _window_start              AS minute,
       COUNT(*)                   AS trades,
       SUM(t.price * t.quantity)  AS notional,
       MAX(t.price)               AS top_price
FROM trades t
JOIN symbols s ON t.symbol = s.symbol
GROUP BY s.sector
WINDOW TUMBLING(ts, 1m)
EMIT FINAL
WITH ('symbols.type' = 'file_source', 'symbols.path' = 'data/symbols.csv', 'symbols.format' = 'csv');
