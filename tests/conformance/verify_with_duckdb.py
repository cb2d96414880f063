#!/usr/bin/env python3
"""Independent check of the conformance expectations.

For every case with a `reference_sql`, load the case's inputs into DuckDB
(one table per source), run the reference query and compare DuckDB's rows with
the rows the spec expects. This verifies the expected outputs themselves with
another engine, so they are never just what Velostream printed.

Usage: verify_with_duckdb.py [spec files or directories ...]
Prints one line per case and "N passed, N failed" at the end.
"""

import json
import pathlib
import sys
import tempfile
from decimal import Decimal, InvalidOperation

import duckdb
import yaml


def spec_files(paths):
    for p in map(pathlib.Path, paths):
        if p.is_dir():
            yield from sorted(p.rglob("*.yaml"))
        else:
            yield p


def normalize(value):
    """DuckDB values as the JSON values Velostream writes."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return value
    if hasattr(value, "isoformat"):
        return instant_text(value.isoformat())
    return value


def instant_text(text):
    """ISO text as Velostream writes it: fractions in groups of three
    digits without trailing zero groups, and UTC as Z."""
    if text.endswith("+00:00"):
        text = text[: -len("+00:00")] + "Z"
    zone = "Z" if text.endswith("Z") else ""
    body = text[: len(text) - len(zone)]
    if "." in body:
        whole, fraction = body.split(".", 1)
        while fraction.endswith("000"):
            fraction = fraction[:-3]
        body = f"{whole}.{fraction}" if fraction else whole
    return body + zone


def numbers_equal(a, b):
    try:
        if Decimal(str(a)) == Decimal(str(b)):
            return True
    except InvalidOperation:
        pass
    a, b = float(a), float(b)
    return a == b or abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def values_equal(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float, Decimal)) and isinstance(b, (int, float, Decimal)):
        return numbers_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    return a == b


def rows_equal(expected, actual, ordered):
    if len(expected) != len(actual):
        return False
    if ordered:
        return all(values_equal(e, a) for e, a in zip(expected, actual))
    remaining = list(actual)
    for e in expected:
        for i, a in enumerate(remaining):
            if values_equal(e, a):
                del remaining[i]
                break
        else:
            return False
    return True


def load_inputs(con, case, tmp):
    for name, spec in (case.get("inputs") or {}).items():
        fmt, data = ("jsonl", spec) if isinstance(spec, str) else (spec["format"], spec["data"])
        path = pathlib.Path(tmp) / f"{name}.{fmt}"
        path.write_text(data)
        if fmt in ("jsonl", "json"):
            reader = f"read_json_auto('{path}')"
        elif fmt == "csv":
            delim = case.get("reference_delimiter", ",")
            reader = f"read_csv_auto('{path}', header=true, delim='{delim}')"
        else:
            raise ValueError(f"reference inputs do not support format {fmt}")
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM {reader}')


def check_case(case):
    references = case["reference_sql"]
    expected = case.get("expected") or {}
    if isinstance(references, str):
        if len(expected) != 1:
            return "reference_sql as text needs exactly one expected sink"
        references = {next(iter(expected)): references}
    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect()
        # event times are compared as UTC wall-clock timestamps
        con.execute("SET TimeZone = 'UTC'")
        load_inputs(con, case, tmp)
        for sink, sql in references.items():
            want = expected[sink]
            ordered = isinstance(want, dict) and want.get("ordered", False)
            text = want if isinstance(want, str) else want["rows"]
            rows = [json.loads(l, parse_float=Decimal) for l in text.splitlines() if l.strip()]
            cur = con.execute(sql)
            cols = [d[0] for d in cur.description]
            got = [{c: normalize(v) for c, v in zip(cols, r)} for r in cur.fetchall()]
            if not rows_equal(rows, got, ordered):
                return f"sink {sink}: DuckDB gives\n" + "\n".join(
                    f"    {json.dumps(g, default=str)}" for g in got
                ) + "\n  the spec expects\n" + "\n".join(f"    {json.dumps(r, default=str)}" for r in rows)
    return None


def main(argv):
    passed = failed = 0
    for path in spec_files(argv or ["tests/conformance"]):
        spec = yaml.safe_load(path.read_text())
        for case in spec.get("cases", []):
            if not case.get("reference_sql"):
                continue
            problem = check_case(case)
            if problem:
                failed += 1
                print(f"FAIL {path}::{case['name']}\n  {problem}")
            else:
                passed += 1
                print(f"PASS {path}::{case['name']}")
    print(f"\n{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
