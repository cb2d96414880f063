#!/usr/bin/env python3
"""Differential SQL testing: random queries run by Velostream and by DuckDB.

Each round generates a random data set (a stream `t` ordered by event time
and a table `dim`) and random queries within the dialect's deterministic
subset: projections and filters over arithmetic, CASE, CAST, COALESCE,
string and date functions with NULLs; DECIMAL arithmetic near its precision
limit; GROUP BY with aggregates and HAVING; tumbling and sliding windows;
stream-table joins. Every query is written twice, in Velostream's dialect
and in DuckDB's, run by both engines on the same data, and the results are
compared as multisets: integers and decimals exactly, doubles to a relative
1e-9, timestamps as instants.

Intended differences, written into the DuckDB side of each query: LIKE
patterns escape with a backslash by default (as in PostgreSQL), and a
DECIMAL cast to an integer drops its fraction (as in Flink and Spark) where
DuckDB rounds; `/` on integers divides exactly as integers.

A mismatch is shrunk (rows of the data, then parts of the query) while it
persists and reported with both queries, the data and both answers; with
--out DIR each one is also written there as a conformance case.

Usage:
  scripts/sqlfuzz.py [--seed N] [--queries K] [--time-limit SECONDS]
                     [--binary PATH] [--out DIR] [--verbose]
Exit status 1 when a query gave different answers.
"""

import argparse
import datetime as dt
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal

import duckdb

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "conformance"))
from verify_with_duckdb import instant_text  # noqa: E402

EPOCH = dt.datetime(2026, 1, 1)
KEYS = ["a", "b", "c", "dd", None]
WORDS = ["alpha", "Beta", " gamma ", "delta_x", "", "a%b", "zeta", None]


# --- data --------------------------------------------------------------------


def make_data(rng):
    """Rows of `t` (ordered by ts, some equal) and of `dim`."""
    rows = []
    ts = EPOCH + dt.timedelta(seconds=rng.randint(0, 3600))
    big = rng.random() < 0.5
    for i in range(rng.randint(5, 120)):
        ts += dt.timedelta(milliseconds=rng.choice([0, 250, 1000, 7000, 30000, 61000]))
        scale = 10**13 if big else 10**4
        d = Decimal(rng.randint(-scale, scale)) + Decimal(rng.randint(0, 9999)) / Decimal(10000)
        rows.append(
            {
                "id": i,
                "k": rng.choice(KEYS),
                "a": maybe(rng, rng.randint(-1000000, 1000000)),
                "b": maybe(rng, rng.randint(-50, 50)),
                "d": maybe(rng, d.quantize(Decimal("0.0001"))),
                "s": rng.choice(WORDS),
                "ts": ts,
            }
        )
    dims = [
        {"dkey": key, "v": rng.randint(-100, 100), "label": rng.choice(WORDS)}
        for key in rng.sample([k for k in KEYS if k] + ["zz"], rng.randint(1, 5))
    ]
    if rng.random() < 0.3:
        dims.append(dict(dims[0], v=dims[0]["v"] + 1))  # a duplicate key
    return rows, dims


def maybe(rng, value, null_share=0.15):
    return None if rng.random() < null_share else value


T_COLUMNS = [("id", "BIGINT"), ("k", "VARCHAR"), ("a", "BIGINT"), ("b", "BIGINT"),
             ("d", "DECIMAL(18,4)"), ("s", "VARCHAR"), ("ts", "TIMESTAMP")]
DIM_COLUMNS = [("dkey", "VARCHAR"), ("v", "BIGINT"), ("label", "VARCHAR")]


def write_jsonl(path, rows, epoch_ts):
    with open(path, "w") as f:
        for r in rows:
            out = []
            for key, value in r.items():
                if isinstance(value, dt.datetime):
                    if epoch_ts:
                        text = str(int((value - dt.datetime(1970, 1, 1)).total_seconds() * 1000))
                    else:
                        text = json.dumps(value.isoformat())
                elif isinstance(value, Decimal):
                    text = str(value)  # an exact JSON number
                else:
                    text = json.dumps(value)
                out.append(f"{json.dumps(key)}: {text}")
            f.write("{" + ", ".join(out) + "}\n")


# --- expressions: each generator returns (velostream_sql, duckdb_sql) -----------


class Gen:
    def __init__(self, rng):
        self.rng = rng

    def pick(self, *options):
        return self.rng.choice(options)

    def both(self, text):
        return (text, text)

    def same(self, template, *parts):
        """`template` filled with each part's text in both dialects."""
        return tuple(template.format(*(p[i] for p in parts)) for i in (0, 1))

    def int_expr(self, depth=0):
        r = self.rng
        leaf = depth >= 2 or r.random() < 0.35
        if leaf:
            return self.pick(
                self.both("a"), self.both("b"), self.both("id"),
                self.both(str(r.randint(-20, 20))),
            )
        choice = r.randint(0, 11)
        x, y = self.int_expr(depth + 1), self.int_expr(depth + 1)
        if choice == 0:
            op = self.pick("+", "-")
            return (f"({x[0]} {op} {y[0]})", f"({x[1]} {op} {y[1]})")
        if choice == 1:
            n = r.randint(-9, 9)
            return (f"({x[0]} * {n})", f"({x[1]} * {n})")
        if choice == 2:
            n = self.pick(2, 3, 7, -4)
            return (f"({x[0]} % {n})", f"({x[1]} % {n})")
        if choice == 3:
            return (f"abs({x[0]})", f"abs({x[1]})")
        if choice == 4:
            c = self.bool_expr(depth + 1)
            return self.same("CASE WHEN {} THEN {} ELSE {} END", c, x, y)
        if choice == 5:
            return self.same("COALESCE({}, {})", x, y)
        if choice == 6:
            s = self.str_expr(depth + 1)
            return (f"CAST(length({s[0]}) AS BIGINT)", f"CAST(length({s[1]}) AS BIGINT)")
        if choice == 7:
            return (f"CAST(EXTRACT(MINUTE FROM ts) AS BIGINT)", "CAST(EXTRACT(MINUTE FROM ts) AS BIGINT)")
        if choice == 8:
            n = self.pick(2, 5, 10)
            return (f"({x[0]} / {n})", f"CAST(trunc({x[1]} / {n}) AS BIGINT)")
        if choice == 9:
            d = self.dec_expr(depth + 1)
            # a DECIMAL cast to an integer drops its fraction in Velostream
            # (as in Flink, Spark and Arrow); DuckDB rounds
            return (f"CAST({d[0]} AS BIGINT)", f"CAST(trunc({d[1]}) AS BIGINT)")
        if choice == 10:
            s = self.str_expr(depth + 1)
            return (f"CAST(strpos({s[0]}, 'a') AS BIGINT)", f"CAST(strpos({s[1]}, 'a') AS BIGINT)")
        return (f"(-({x[0]}))", f"(-({x[1]}))")

    def dec_expr(self, depth=0):
        r = self.rng
        if depth >= 2 or r.random() < 0.4:
            return self.pick(
                self.both("d"),
                self.both(f"CAST({r.randint(-999, 999)}.{r.randint(0, 99):02d} AS DECIMAL(18,4))"),
            )
        choice = r.randint(0, 6)
        x, y = self.dec_expr(depth + 1), self.dec_expr(depth + 1)
        if choice == 0:
            op = self.pick("+", "-")
            return (f"({x[0]} {op} {y[0]})", f"({x[1]} {op} {y[1]})")
        if choice == 1:
            n = r.randint(-9, 9)
            return (f"({x[0]} * {n})", f"({x[1]} * {n})")
        if choice == 2:
            return (f"abs({x[0]})", f"abs({x[1]})")
        if choice == 3:
            c = self.bool_expr(depth + 1)
            return self.same("CASE WHEN {} THEN {} ELSE {} END", c, x, y)
        if choice == 4:
            i = self.int_expr(depth + 1)
            return (f"CAST({i[0]} AS DECIMAL(18,4))", f"CAST({i[1]} AS DECIMAL(18,4))")
        if choice == 5:
            n = r.randint(0, 3)
            return (f"round({x[0]}, {n})", f"round({x[1]}, {n})")
        return self.same("COALESCE({}, {})", x, y)

    def str_expr(self, depth=0):
        r = self.rng
        if depth >= 2 or r.random() < 0.4:
            return self.pick(self.both("k"), self.both("s"), self.both("'x'"))
        choice = r.randint(0, 9)
        x, y = self.str_expr(depth + 1), self.str_expr(depth + 1)
        if choice == 0:
            f = self.pick("upper", "lower", "trim")
            return (f"{f}({x[0]})", f"{f}({x[1]})")
        if choice == 1:
            return (f"concat({x[0]}, {y[0]})", f"concat({x[1]}, {y[1]})")
        if choice == 2:
            return (f"({x[0]} || {y[0]})", f"({x[1]} || {y[1]})")
        if choice == 3:
            start, n = r.randint(1, 3), r.randint(0, 4)
            return (f"substr({x[0]}, {start}, {n})", f"substr({x[1]}, {start}, {n})")
        if choice == 4:
            return (f"replace({x[0]}, 'a', 'A')", f"replace({x[1]}, 'a', 'A')")
        if choice == 5:
            i = self.int_expr(depth + 1)
            return (f"CAST({i[0]} AS VARCHAR)", f"CAST({i[1]} AS VARCHAR)")
        if choice == 6:
            c = self.bool_expr(depth + 1)
            return self.same("CASE WHEN {} THEN {} ELSE {} END", c, x, y)
        if choice == 7:
            n = r.randint(0, 4)
            f = self.pick("left", "right")
            return (f"{f}({x[0]}, {n})", f"{f}({x[1]}, {n})")
        if choice == 8:
            n = r.randint(0, 8)
            return (f"lpad({x[0]}, {n}, '*')", f"lpad({x[1]}, {n}, '*')")
        return self.same("COALESCE({}, {})", x, y)

    def ts_expr(self):
        unit = self.pick("minute", "hour")
        n = self.rng.randint(1, 90)
        return self.pick(
            self.both("ts"),
            self.both(f"date_trunc('{unit}', ts)"),
            self.both(f"ts + INTERVAL '{n}' MINUTE"),
            self.both(f"ts - INTERVAL '{n}' SECOND"),
        )

    def bool_expr(self, depth=0):
        r = self.rng
        choice = r.randint(0, 9 if depth < 2 else 5)
        if choice == 0:
            x, y = self.int_expr(depth + 1), self.int_expr(depth + 1)
            op = self.pick("=", "<>", "<", "<=", ">", ">=")
            return (f"{x[0]} {op} {y[0]}", f"{x[1]} {op} {y[1]}")
        if choice == 1:
            x, y = self.dec_expr(depth + 1), self.dec_expr(depth + 1)
            op = self.pick("<", ">=", "=")
            return (f"{x[0]} {op} {y[0]}", f"{x[1]} {op} {y[1]}")
        if choice == 2:
            x = self.str_expr(depth + 1)
            w = self.pick("'a'", "'alpha'", "'Beta'", "''")
            return (f"{x[0]} = {w}", f"{x[1]} = {w}")
        if choice == 3:
            x = self.str_expr(depth + 1)
            p = self.pick("'a%'", "'%a'", "'_e%'", "'%\\_%'")
            # backslash escapes in Velostream's LIKE (as in PostgreSQL);
            # DuckDB has no escape character unless told
            escape = " ESCAPE '\\'" if "\\" in p else ""
            return (f"{x[0]} LIKE {p}", f"{x[1]} LIKE {p}{escape}")
        if choice == 4:
            x = self.pick(self.int_expr(depth + 1), self.str_expr(depth + 1), self.dec_expr(depth + 1))
            neg = self.pick("", "NOT ")
            return (f"{x[0]} IS {neg}NULL", f"{x[1]} IS {neg}NULL")
        if choice == 5:
            x = self.int_expr(depth + 1)
            lo = r.randint(-100, 0)
            hi = lo + r.randint(0, 200)
            return (f"{x[0]} BETWEEN {lo} AND {hi}", f"{x[1]} BETWEEN {lo} AND {hi}")
        if choice == 6:
            x, y = self.bool_expr(depth + 1), self.bool_expr(depth + 1)
            op = self.pick("AND", "OR")
            return (f"({x[0]} {op} {y[0]})", f"({x[1]} {op} {y[1]})")
        if choice == 7:
            x = self.bool_expr(depth + 1)
            return (f"NOT ({x[0]})", f"NOT ({x[1]})")
        if choice == 8:
            x = self.int_expr(depth + 1)
            items = ", ".join(str(r.randint(-5, 5)) for _ in range(3))
            return (f"{x[0]} IN ({items})", f"{x[1]} IN ({items})")
        t = self.ts_expr()
        when = (EPOCH + dt.timedelta(minutes=r.randint(0, 90))).strftime("%Y-%m-%d %H:%M:%S")
        return (f"{t[0]} >= TIMESTAMP '{when}'", f"{t[1]} >= TIMESTAMP '{when}'")

    def typed(self, kind):
        return {"int": self.int_expr, "dec": self.dec_expr, "str": self.str_expr,
                "ts": lambda: self.ts_expr()}[kind]()


# --- queries -------------------------------------------------------------------


class Query:
    """One query in both dialects; `kinds` gives each output column's kind."""

    def __init__(self, shape, parts):
        self.shape = shape
        self.parts = parts  # dict: select [(name, vs, dd, kind)], where, group, having, window...

    def render(self, dialect):
        p = self.parts
        i = 0 if dialect == "velostream" else 1
        cols = ", ".join(f"{c[1 + i]} AS {c[0]}" for c in p["select"])
        if self.shape == "join":
            join = p["join"]
            sql = f"SELECT {cols} FROM t {join} dim ON t.k = dim.dkey"
        elif self.shape == "sliding" and dialect == "duckdb":
            size, adv = p["window"]
            sql = (f"SELECT {cols} FROM (SELECT *, make_timestamp(CAST((((epoch_ms(ts) // {adv}) - j) * {adv}) * 1000 AS BIGINT)) AS _ws "
                   f"FROM t, range(0, {size // adv}) r(j)) w")
        elif self.shape == "tumbling" and dialect == "duckdb":
            size, _ = p["window"]
            sql = (f"SELECT {cols} FROM (SELECT *, make_timestamp(CAST((epoch_ms(ts) // {size}) * {size} * 1000 AS BIGINT)) AS _ws FROM t) w")
        else:
            sql = f"SELECT {cols} FROM t"
        conds = []
        if p.get("where"):
            conds.append(p["where"][i])
        if self.shape == "sliding" and dialect == "duckdb":
            size, _ = p["window"]
            conds.append(f"epoch_ms(_ws) + {size} > epoch_ms(ts)")
        if conds:
            sql += " WHERE " + " AND ".join(f"({c})" for c in conds)
        if p.get("group"):
            groups = [g[i] for g in p["group"]]
            if self.shape in ("tumbling", "sliding") and dialect == "duckdb":
                groups.append("_ws")
            sql += " GROUP BY " + ", ".join(groups)
        if p.get("having"):
            sql += f" HAVING {p['having'][i]}"
        if self.shape in ("tumbling", "sliding") and dialect == "velostream":
            size, adv = p["window"]
            if self.shape == "tumbling":
                sql += f" WINDOW TUMBLING(ts, {size}ms) EMIT FINAL"
            else:
                sql += f" WINDOW SLIDING(ts, {size}ms, {adv}ms) EMIT FINAL"
        return sql

    def kinds(self):
        return {c[0]: c[3] for c in self.parts["select"]}

    def key(self):
        """Output columns keying a changelog (plain GROUP BY)."""
        return [c[0] for c in self.parts["select"] if c[4]] if self.shape == "group" else None


def make_query(gen):
    rng = gen.rng
    shape = rng.choice(["project", "project", "group", "tumbling", "sliding", "join"])
    parts = {"select": []}
    if shape == "project":
        parts["select"].append(("id", "id", "id", "int", True))
        for n in range(rng.randint(1, 3)):
            kind = rng.choice(["int", "int", "dec", "str", "ts"])
            vs, dd = gen.typed(kind)
            parts["select"].append((f"c{n}", vs, dd, kind, False))
        if rng.random() < 0.7:
            parts["where"] = gen.bool_expr()
    elif shape == "join":
        parts["join"] = rng.choice(["JOIN", "LEFT JOIN"])
        parts["select"] = [("id", "t.id", "t.id", "int", True), ("v", "dim.v", "dim.v", "int", False),
                           ("label", "dim.label", "dim.label", "str", False)]
        if rng.random() < 0.5:
            vs, dd = gen.int_expr()
            parts["select"].append(("c0", vs, dd, "int", False))
        if rng.random() < 0.5:
            parts["where"] = gen.bool_expr()
    else:
        group = rng.choice([("k", "k"), ("(b % 3)", "(b % 3)"), ("upper(k)", "upper(k)")])
        parts["group"] = [group]
        parts["select"].append(("g", group[0], group[1], "str" if "k" in group[0] else "int", True))
        if shape in ("tumbling", "sliding"):
            size = rng.choice([10000, 30000, 60000, 120000])
            adv = size if shape == "tumbling" else rng.choice([d for d in (5000, 10000, 30000) if size % d == 0 and d < size])
            parts["window"] = (size, adv)
            parts["select"].append(("ws", "_window_start", "_ws", "ts", True))
        aggs = [
            ("COUNT(*)", "COUNT(*)", "int"), ("COUNT(a)", "COUNT(a)", "int"), ("SUM(a)", "SUM(a)", "int"),
            ("SUM(d)", "SUM(d)", "dec"), ("MIN(b)", "MIN(b)", "int"), ("MAX(d)", "MAX(d)", "dec"),
            ("MIN(s)", "MIN(s)", "str"), ("AVG(a)", "AVG(a)", "double"),
            ("COUNT(DISTINCT b)", "COUNT(DISTINCT b)", "int"), ("SUM(a * b)", "SUM(a * b)", "int"),
        ]
        for n, (vs, dd, kind) in enumerate(rng.sample(aggs, rng.randint(1, 4))):
            parts["select"].append((f"m{n}", vs, dd, kind, False))
        if rng.random() < 0.5:
            parts["where"] = gen.bool_expr()
        if shape == "group" and rng.random() < 0.3:
            n = rng.randint(1, 4)
            parts["having"] = (f"COUNT(*) >= {n}", f"COUNT(*) >= {n}")
    return Query(shape, parts)


# --- running -------------------------------------------------------------------


def velostream_binary(given):
    if given:
        return given
    target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/velostream-target")
    for candidate in (f"{target}/debug/velostream", shutil.which("velostream")):
        if candidate and os.path.exists(candidate):
            return candidate
    sys.exit("no velostream binary: build it (cargo build -p velostream) or pass --binary")


def run_velostream(binary, workdir, rows, dims, queries, epoch_ts, batch_size=100000):
    """Runs the queries as one application; returns (outputs or None, error text)."""
    write_jsonl(workdir / "t.jsonl", rows, epoch_ts)
    write_jsonl(workdir / "dim.jsonl", dims, False)
    fmt = ", 'event.time.format' = 'epoch_millis'" if epoch_ts else ""
    decl_t = ", ".join(f"{n} {ty}" for n, ty in T_COLUMNS)
    decl_d = ", ".join(f"{n} {ty}" for n, ty in DIM_COLUMNS)
    lines = [
        f"CREATE STREAM t ({decl_t}) WITH ('type' = 'file_source', 'path' = 't.jsonl', "
        f"'event.time.field' = 'ts'{fmt});",
        f"CREATE STREAM dim ({decl_d}) WITH ('type' = 'file_source', 'path' = 'dim.jsonl');",
    ]
    for n, q in enumerate(queries):
        out = workdir / f"q{n}.jsonl"
        if out.exists():
            out.unlink()
        lines.append(f"CREATE STREAM q{n} AS {q.render('velostream')} "
                     f"WITH ('q{n}.type' = 'file_sink', 'q{n}.path' = 'q{n}.jsonl');")
    (workdir / "app.sql").write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [binary, "run", "--batch-size", str(batch_size), "app.sql"],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )
    if proc.returncode != 0:
        return None, proc.stderr.strip()[-2000:]
    warnings = [l for l in proc.stderr.splitlines() if l.startswith("warning:")]
    outputs = []
    for n in range(len(queries)):
        path = workdir / f"q{n}.jsonl"
        text = path.read_text() if path.exists() else ""
        outputs.append([json.loads(l, parse_float=Decimal) for l in text.splitlines() if l.strip()])
    return outputs, "\n".join(warnings)


def run_duckdb(rows, dims, query):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE t (" + ", ".join(f"{n} {ty}" for n, ty in T_COLUMNS) + ")")
    con.execute("CREATE TABLE dim (" + ", ".join(f"{n} {ty}" for n, ty in DIM_COLUMNS) + ")")
    if rows:
        con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)", [list(r.values()) for r in rows])
    if dims:
        con.executemany("INSERT INTO dim VALUES (?, ?, ?)", [list(r.values()) for r in dims])
    try:
        cur = con.execute(query.render("duckdb"))
    except duckdb.Error as e:
        return None, str(e)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()], ""


def normal(value, kind):
    if value is None:
        return None
    if kind == "double":
        return float(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, Decimal)):
        return Decimal(value).normalize() if value != 0 else Decimal(0)
    if isinstance(value, float):
        return float(value)
    if hasattr(value, "isoformat"):
        return instant_text(value.isoformat())
    return value


def canonical(rows, kinds):
    """`rows` in one order whatever order they came in."""
    def key(row):
        return json.dumps([(c, normal(row.get(c), k)) for c, k in sorted(kinds.items())], default=str)
    return sorted(rows, key=key)


def equal_rows(a, b, kinds):
    for c, k in kinds.items():
        x, y = normal(a.get(c), k), normal(b.get(c), k)
        if k == "double" and x is not None and y is not None:
            if not (x == y or abs(x - y) <= 1e-9 * max(abs(x), abs(y))):
                return False
        elif x != y:
            return False
    return True


def table_of_changelog(rows, key):
    latest = {}
    for r in rows:
        latest[json.dumps([r.get(k) for k in key], default=str)] = r
    return list(latest.values())


def compare(query, vs_rows, dd_rows):
    kinds = query.kinds()
    if query.key() is not None:
        vs_rows = table_of_changelog(vs_rows, query.key())
    a = canonical(vs_rows, kinds)
    b = canonical(dd_rows, kinds)
    return len(a) == len(b) and all(equal_rows(x, y, kinds) for x, y in zip(a, b))


def check(binary, workdir, rows, dims, query, epoch_ts):
    """None when both engines agree; otherwise what each said."""
    dd, dd_err = run_duckdb(rows, dims, query)
    if dd is None:
        return None  # outside what DuckDB can say; not a finding
    outputs, vs_err = run_velostream(binary, workdir, rows, dims, [query], epoch_ts)
    if outputs is None:
        return {"velostream_error": vs_err, "duckdb": dd}
    if not compare(query, outputs[0], dd):
        return {"velostream": outputs[0], "duckdb": dd, "warnings": vs_err}
    return None


# --- shrinking and reporting -----------------------------------------------------


def shrink(binary, workdir, rows, dims, query, epoch_ts, budget=60):
    """Fewer rows and a smaller query that still disagree."""
    tries = 0
    chunk = max(1, len(rows) // 2)
    while chunk >= 1 and tries < budget:
        i, progressed = 0, False
        while i < len(rows) and tries < budget:
            candidate = rows[:i] + rows[i + chunk:]
            tries += 1
            if candidate and check(binary, workdir, candidate, dims, query, epoch_ts):
                rows, progressed = candidate, True
            else:
                i += chunk
        if not progressed:
            chunk //= 2
    for part in ("where", "having"):
        if query.parts.get(part) and tries < budget:
            smaller = Query(query.shape, {k: v for k, v in query.parts.items() if k != part})
            tries += 1
            if check(binary, workdir, rows, dims, smaller, epoch_ts):
                query = smaller
    select = query.parts["select"]
    for col in list(select):
        if col[4] or len(select) <= 2 or tries >= budget:
            continue
        smaller = Query(query.shape, dict(query.parts, select=[c for c in select if c is not col]))
        tries += 1
        if check(binary, workdir, rows, dims, smaller, epoch_ts):
            query, select = smaller, smaller.parts["select"]
    return rows, query


def report(n, rows, dims, query, finding, epoch_ts, out_dir):
    def dump(rs):
        return "\n".join("      " + json.dumps(r, default=str) for r in rs)
    text = [
        f"MISMATCH {n} ({query.shape}, event time as {'epoch millis' if epoch_ts else 'ISO text'})",
        f"  velostream: {query.render('velostream')}",
        f"  duckdb:     {query.render('duckdb')}",
        f"  t ({len(rows)} rows):", dump(rows),
    ]
    if query.shape == "join":
        text += ["  dim:", dump(dims)]
    if "velostream_error" in finding:
        text.append("  velostream failed: " + finding["velostream_error"].replace("\n", "\n    "))
    else:
        text += ["  velostream gives:", dump(finding["velostream"])]
    text += ["  duckdb gives:", dump(finding["duckdb"])]
    print("\n".join(text), flush=True)
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"mismatch_{n}.txt").write_text("\n".join(text) + "\n")


# --- main --------------------------------------------------------------------------


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--queries", type=int, default=200, help="queries to run (default 200)")
    ap.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--binary", help="the velostream binary (default: the debug build)")
    ap.add_argument("--out", type=pathlib.Path, help="write each mismatch here")
    ap.add_argument("--per-round", type=int, default=20, help="queries per data set")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    binary = velostream_binary(args.binary)
    rng = random.Random(args.seed)
    gen = Gen(rng)
    started = time.monotonic()
    ran = skipped = mismatches = rounds = 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        while ran < args.queries:
            if args.time_limit and time.monotonic() - started > args.time_limit:
                break
            rounds += 1
            rows, dims = make_data(rng)
            epoch_ts = rng.random() < 0.5
            # answers do not depend on batching: vary it
            batch_size = rng.choice([1, 7, 100000])
            queries = [make_query(gen) for _ in range(min(args.per_round, args.queries - ran))]
            answers = [run_duckdb(rows, dims, q) for q in queries]
            kept = [(q, a) for q, (a, _) in zip(queries, answers) if a is not None]
            skipped += len(queries) - len(kept)
            if args.verbose:
                for q, (a, err) in zip(queries, answers):
                    if a is None:
                        print(f"DuckDB refused {q.render('duckdb')}: {err}")
            if not kept:
                continue
            outputs, _ = run_velostream(
                binary, workdir, rows, dims, [q for q, _ in kept], epoch_ts, batch_size
            )
            for i, (q, dd) in enumerate(kept):
                ran += 1
                agree = outputs is not None and compare(q, outputs[i], dd)
                if agree:
                    continue
                # alone, to tell this query's failure from another's
                finding = check(binary, workdir, rows, dims, q, epoch_ts)
                if finding is None:
                    continue
                mismatches += 1
                small_rows, small_query = shrink(binary, workdir, rows, dims, q, epoch_ts)
                small = check(binary, workdir, small_rows, dims, small_query, epoch_ts) or finding
                report(mismatches, small_rows, dims, small_query, small, epoch_ts, args.out)
            if args.verbose:
                print(f"round {rounds}: {ran} queries, {mismatches} mismatches", flush=True)
    elapsed = time.monotonic() - started
    print(f"sqlfuzz seed {args.seed}: {ran} queries over {rounds} data sets in {elapsed:.0f} s, "
          f"{mismatches} mismatches, {skipped} queries DuckDB refused")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
