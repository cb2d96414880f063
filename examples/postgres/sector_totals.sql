-- Trades enriched from a PostgreSQL table and totalled per sector into
-- another PostgreSQL table, one row per sector kept up to date (upsert).
-- The symbols are looked up by key as batches need them and cached
-- (performance.cache); the result table is created on first use.
--
--   scripts/postgres.sh start
--   psql "$(scripts/postgres.sh url)" -f examples/postgres/symbols.sql
--   DB_HOST=127.0.0.1 DB_PORT=15432 DB_USER=velostream DB_PASSWORD=velostream-test DB_NAME=velostream \
--     velostream run examples/postgres/sector_totals.sql
--   psql "$(scripts/postgres.sh url)" -c 'SELECT * FROM sector_totals'

CREATE STREAM trades (
    trade_id BIGINT,
    symbol   VARCHAR,
    price    DECIMAL(12, 2),
    quantity BIGINT
) WITH (
    'trades.type' = 'file_source',
    'trades.path' = '../trades/data/trades.jsonl'
);

CREATE TABLE sector_totals AS
SELECT COALESCE(s.sector, 'unlisted') AS sector,
       COUNT(*) AS trades,
       SUM(t.price * t.quantity) AS notional
FROM trades t LEFT JOIN symbols s ON t.symbol = s.symbol
GROUP BY COALESCE(s.sector, 'unlisted')
WITH (
    'symbols.type' = 'postgres_source',
    'symbols.table' = 'symbols',
    'sector_totals.type' = 'postgres_sink',
    'sector_totals.table' = 'sector_totals',
    'sector_totals.auto.create' = 'true'
);
