#!/usr/bin/env python3
"""The same questions through Velostream and DuckDB, on the same files, in one run.

Velostream runs each question as a user runs it (`velostream run app.sql`,
JSON Lines in, JSON Lines out); DuckDB runs the same question over the same
file (`read_json` with the same declared columns, `COPY ... (FORMAT JSON)`
out). For each question the script prints the median wall time of each
engine, their CPU time, and the ratio, and checks that both wrote the same
rows (numbers to within a millionth: DuckDB averages decimals as doubles,
Velostream exactly).

DuckDB's wall time is the query's own time inside its process (after Python
and DuckDB have started), the stricter measure for Velostream; its CPU time
is the whole process's. Velostream's times are the whole `velostream run`.

Usage:
  python3 benches/vs_duckdb.py [--velostream BIN] [--records N] [--events N]
                               [--runs N] [--dir DIR] [--only q1,q2]
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent

TRADE_COLUMNS = (
    "id BIGINT, symbol VARCHAR, side VARCHAR, price DECIMAL(10, 2), quantity BIGINT, "
    "exchange VARCHAR, trader VARCHAR, ccy VARCHAR, ts {ts}"
)
DUCK_TRADES = (
    "read_json('{path}', format='newline_delimited', columns={{'id': 'BIGINT', "
    "'symbol': 'VARCHAR', 'side': 'VARCHAR', 'price': 'DECIMAL(10,2)', 'quantity': 'BIGINT', "
    "'exchange': 'VARCHAR', 'trader': 'VARCHAR', 'ccy': 'VARCHAR', 'ts': 'BIGINT'}})"
)
DUCK_BIDS = (
    "read_json('{path}', format='newline_delimited', columns={{'auction': 'BIGINT', "
    "'bidder': 'BIGINT', 'price': 'BIGINT', 'channel': 'VARCHAR', 'url': 'VARCHAR', "
    "'datetime': 'TIMESTAMP', 'extra': 'VARCHAR'}})"
)


def trades_app(ts_type, query):
    return (
        f"CREATE STREAM trades ({TRADE_COLUMNS.format(ts=ts_type)})\n"
        "  WITH ('type' = 'file_source', 'format' = 'jsonl');\n"
        f"CREATE STREAM out AS {query};\n"
    )


# name, input, the Velostream application (or a file of benches/nexmark with
# its output statement), the DuckDB query over {src}
QUESTIONS = [
    (
        "filter + projection",
        "trades",
        trades_app(
            "BIGINT",
            "SELECT id, symbol, price * quantity AS notional, lower(side) AS side "
            "FROM trades WHERE price > 100 AND exchange = 'NASDAQ'",
        ),
        "SELECT id, symbol, price * quantity AS notional, lower(side) AS side "
        "FROM {src} WHERE price > 100 AND exchange = 'NASDAQ'",
    ),
    (
        "1-minute tumbling COUNT/SUM/AVG/MIN/MAX per symbol",
        "trades",
        trades_app(
            "TIMESTAMP",
            "SELECT symbol, _window_start AS minute, COUNT(*) AS trades, SUM(price) AS total, "
            "AVG(price) AS mean, MIN(price) AS low, MAX(price) AS high "
            "FROM trades GROUP BY symbol WINDOW TUMBLING(ts, 1m) EMIT FINAL",
        ),
        "SELECT symbol, time_bucket(INTERVAL 1 MINUTE, make_timestamp(ts * 1000)) AS minute, "
        "COUNT(*) AS trades, SUM(price) AS total, AVG(price) AS mean, MIN(price) AS low, "
        "MAX(price) AS high FROM {src} GROUP BY ALL",
    ),
    (
        "Nexmark q0 (pass-through)",
        "bid",
        ("q0.sql", "q0"),
        "SELECT auction, bidder, price, datetime, extra FROM {src}",
    ),
    (
        "Nexmark q1 (currency conversion)",
        "bid",
        ("q1.sql", "q1"),
        "SELECT auction, bidder, 0.908 * price AS price, datetime, extra FROM {src}",
    ),
    (
        "Nexmark q2 (selection)",
        "bid",
        ("q2.sql", "q2"),
        "SELECT auction, price FROM {src} WHERE auction % 123 = 0",
    ),
    (
        "Nexmark q5 (hot items, one statement)",
        "bid",
        ("standard/q5.sql", "q5"),
        """WITH b AS (SELECT auction, epoch_ms(datetime) AS t FROM {src}),
        w AS (SELECT auction, r.s AS ws FROM b,
              unnest(range((t // 2000) * 2000 - 8000, (t // 2000) * 2000 + 1, 2000)) AS r(s)),
        counts AS (SELECT auction, ws, COUNT(*) AS num FROM w GROUP BY auction, ws),
        top AS (SELECT ws, MAX(num) AS maxn FROM counts GROUP BY ws)
        SELECT c.auction, c.num, make_timestamp(c.ws * 1000) AS starttime
        FROM counts c JOIN top t ON c.ws = t.ws AND c.num >= t.maxn""",
    ),
    (
        "Nexmark q7 (highest bid, one statement)",
        "bid",
        ("standard/q7.sql", "q7"),
        """WITH m AS (SELECT time_bucket(INTERVAL 10 SECOND, datetime) AS ws, MAX(price) AS maxprice
                   FROM {src} GROUP BY ws)
        SELECT b.auction, b.price, b.bidder, b.datetime FROM {src} b
        JOIN m ON b.price = m.maxprice AND b.datetime >= m.ws
              AND b.datetime < m.ws + INTERVAL 10 SECOND""",
    ),
]

DUCK_RUNNER = """
import sys, time, duckdb
query, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
start = time.perf_counter()
con.execute(f"COPY ({query}) TO '{out}' (FORMAT JSON)")
print(time.perf_counter() - start)
"""


def measured(command, **kwargs):
    """Runs `command`; returns (wall seconds, CPU seconds of the process, stdout)."""
    before = os.times()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    wall = time.perf_counter() - start
    after = os.times()
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{done.stderr}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu, done.stdout


def canonical(value):
    """A value as both engines' JSON can be compared: numbers as numbers
    (decimal text too), times as ISO text without a zone or zero fraction."""
    if isinstance(value, str):
        if value[:4].isdigit() and len(value) >= 19 and value[10:11] in (" ", "T"):
            text = value.replace(" ", "T").rstrip("Z")
            if "." in text:
                text = text.rstrip("0").rstrip(".")
            return text
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def rows_of(path):
    """The rows of a JSON Lines file (values in column-name order), sorted
    by their text and whole-number values first, then their other numbers
    to two places, so both engines' rows line up."""
    rows = []
    with open(path) as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                rows.append(tuple(canonical(row[k]) for k in sorted(row)))

    def order(row):
        exact = tuple(str(v) for v in row if not isinstance(v, float))
        rounded = tuple(round(v, 2) for v in row if isinstance(v, float))
        return exact + rounded

    rows.sort(key=order)
    return rows


def same_rows(ours, theirs):
    """Whether the rows agree, numbers to within a millionth (DuckDB
    averages decimals as doubles and rounds, Velostream keeps them exact
    to six places and truncates)."""
    if len(ours) != len(theirs):
        return False
    for a, b in zip(ours, theirs):
        if len(a) != len(b):
            return False
        for x, y in zip(a, b):
            if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                if abs(x - y) > 1e-6 * max(1.0, abs(x)):
                    return False
            elif x != y:
                return False
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--velostream", help="the binary (default: build the release one)")
    parser.add_argument("--records", type=int, default=5_000_000, help="trade records")
    parser.add_argument("--events", type=int, default=5_000_000, help="Nexmark events")
    parser.add_argument("--runs", type=int, default=3, help="runs per engine (median)")
    parser.add_argument("--dir", default="/var/tmp/velostream-vs", help="data and outputs")
    parser.add_argument("--only", help="comma-separated words of the question names to run")
    args = parser.parse_args()

    try:
        import duckdb
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "duckdb"], check=True)
        import duckdb
    binary = args.velostream
    if not binary:
        target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/velostream-target")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "velostream"], cwd=REPO, check=True)
        binary = f"{target}/release/velostream"
    work = pathlib.Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)

    inputs = {"trades": work / f"trades-{args.records}.jsonl", "bid": work / f"nexmark-{args.events}" / "bid.jsonl"}
    if not inputs["trades"].exists():
        subprocess.run([binary, "bench", "trades", str(inputs["trades"]), "--records", str(args.records)], check=True)
    if not inputs["bid"].exists():
        subprocess.run(
            [binary, "nexmark", "generate", "--events", str(args.events), "--out", str(inputs["bid"].parent)],
            check=True,
        )
    sizes = {k: v.stat().st_size / 1e6 for k, v in inputs.items()}
    print(
        f"DuckDB {duckdb.__version__}, Velostream {binary}; {args.records:,} trades ({sizes['trades']:.0f} MB), "
        f"{args.events:,} Nexmark events ({sizes['bid']:.0f} MB of bids); median of {args.runs} runs, "
        f"{os.cpu_count()} cores\n"
    )
    print("| question | Velostream wall | Velostream CPU | DuckDB wall (query) | DuckDB CPU | wall ratio | same rows |")
    print("|---|---|---|---|---|---|---|")
    wanted = [w.strip().lower() for w in args.only.split(",")] if args.only else None
    for name, source, app, duck_query in QUESTIONS:
        if wanted and not any(w in name.lower() for w in wanted):
            continue
        out_v = work / "velostream-out.jsonl"
        out_d = work / "duckdb-out.jsonl"
        if isinstance(app, str):
            app_file = work / "app.sql"
            app_file.write_text(app)
            sink = "out"
        else:
            app_file, sink = REPO / "benches" / "nexmark" / app[0], app[1]
        command = [binary, "run", "-q", str(app_file)]
        for key, value in [("type", "file_source"), ("path", inputs[source]), ("format", "jsonl")]:
            command += ["--set", f"{source}.{key}={value}"]
        for key, value in [("type", "file_sink"), ("path", out_v), ("format", "jsonl")]:
            command += ["--set", f"{sink}.{key}={value}"]
        src = (DUCK_TRADES if source == "trades" else DUCK_BIDS).format(path=inputs[source])
        query = duck_query.format(src=src)
        velostream, duck = [], []
        for _ in range(args.runs):
            out_v.unlink(missing_ok=True)
            velostream.append(measured(command)[:2])
            wall, cpu, said = measured([sys.executable, "-c", DUCK_RUNNER, query, str(out_d)])
            duck.append((float(said.split()[-1]), cpu))
        v_wall = statistics.median(w for w, _ in velostream)
        v_cpu = statistics.median(c for _, c in velostream)
        d_wall = statistics.median(w for w, _ in duck)
        d_cpu = statistics.median(c for _, c in duck)
        ours, theirs = rows_of(out_v), rows_of(out_d)
        same = "yes" if same_rows(ours, theirs) else f"NO ({len(ours)} vs {len(theirs)} rows)"
        del ours, theirs
        print(
            f"| {name} | {v_wall:.2f} s | {v_cpu:.2f} s | {d_wall:.2f} s | {d_cpu:.2f} s | "
            f"{v_wall / d_wall:.2f} | {same} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
