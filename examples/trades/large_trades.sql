-- Large trades: every trade worth more than 20,000, with its exact notional.
-- Prices arrive as quoted decimal strings and stay exact (DECIMAL, never a double).
--
--   velostream run examples/trades/large_trades.sql

CREATE STREAM trades (
    trade_id BIGINT,
    symbol   VARCHAR,
    side     VARCHAR,
    price    DECIMAL(12, 2),
    quantity BIGINT,
    trader   VARCHAR,
    ts       TIMESTAMP
) WITH ('type' = 'file_source', 'path' = 'data/trades.jsonl', 'format' = 'jsonl');

-- @name: large_trades
CREATE STREAM large_trades AS
SELECT trade_id,
       symbol,
       side,
       price,
       quantity,
       price * quantity AS notional,
       CASE WHEN quantity >= 1000 THEN 'block' ELSE 'regular' END AS size_class
FROM trades
WHERE price * quantity > 20000
WITH ('large_trades.type' = 'file_sink',
      'large_trades.path' = 'output/large_trades.jsonl',
      'large_trades.format' = 'jsonl');

-- Totals per symbol over the whole file, printed when the input ends.
SELECT symbol,
       COUNT(*) AS trades,
       SUM(quantity) AS shares,
       SUM(price * quantity) AS notional,
       MIN(price) AS low,
       MAX(price) AS high
FROM trades
GROUP BY symbol
EMIT FINAL;
