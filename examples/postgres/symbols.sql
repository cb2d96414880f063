-- The reference table the example joins: run once with psql, e.g.
--   psql "$(scripts/postgres.sh url)" -f examples/postgres/symbols.sql
CREATE TABLE IF NOT EXISTS symbols (
    symbol  text PRIMARY KEY,
    company text NOT NULL,
    sector  text NOT NULL
);
INSERT INTO symbols VALUES
    ('AAPL', 'Apple Inc.', 'Technology'),
    ('MSFT', 'Microsoft Corp.', 'Technology'),
    ('GOOG', 'Alphabet Inc.', 'Communication'),
    ('NVDA', 'NVIDIA Corp.', 'Technology')
ON CONFLICT (symbol) DO UPDATE SET company = EXCLUDED.company, sector = EXCLUDED.sector;
