#!/usr/bin/env python3
"""Checks the monitoring files of deploy/prometheus and deploy/grafana against a running service.

    scripts/check_monitoring.py /var/tmp/velostream-target/debug/velostream

Static checks:

- `promtool check config` of deploy/prometheus/prometheus.yml (which loads
  the rules) and of prometheus-tls.yml (its syntax as written, then in full
  with its TLS files pointed at test certificates); `promtool check rules`
  and `promtool test rules` of deploy/prometheus/rules/;
- every alert has a severity and a summary; the dashboard JSON has unique
  panel ids, a query and the data source variable on every panel, and only
  template variables it defines; the Grafana provisioning files load.

Against the binary (waited for while it is being built, up to 45 minutes):

- the service is started on loopback with the guide's tls-config.yaml
  (test certificates, client_auth: required), a plain-HTTP probe_port,
  bearer tokens, checkpoints every 2 s and a circuit breaker; one
  application is deployed through POST /jobs that reads a Kafka topic of
  the test broker (scripts/kafka-broker.sh, or KAFKA_BROKERS), while the
  topic is fed continuously with `velostream produce`;
- Debian's `prometheus` scrapes it every second with a configuration built
  from prometheus.yml (the velostream job's target rewritten to the probe
  port, the other jobs left out) and prometheus-tls.yml's job (over mutual
  TLS on the metrics port; its samples are dropped after the scrape, so the
  series are not doubled), evaluating the rules every second;
- every query of every dashboard panel must return at least one series
  with a value (template variables replaced by a match-all regex), every
  template variable at least one value, every recording rule at least one
  series, every alert expression must evaluate without error (an empty
  result is fine), every rule of /api/v1/rules must be healthy, both scrape
  targets up, and the guide's `histogram_quantile(0.99,
  velostream_processing_latency_ms)` must match nothing.

A failed query is explained by the metric families it reads, as the
binary's /metrics shows them: not exported, exported without samples, or
registered but never observed; the new families
(velostream_checkpoint_age_seconds, velostream_ready,
velostream_circuit_breaker_state, an observed velostream_e2e_latency_ms) are
named as such. Prints one line per check and a summary; exits 1 when a
check fails (2 when it cannot run). Everything it started (the service,
the feed, Prometheus, the broker if it started it) is stopped on any exit.
"""

import copy
import hashlib
import http.client
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from test_certificates import CertificateError, make_certificates

try:
    import yaml
except ImportError:
    print("error: PyYAML is needed (python3 -m pip install pyyaml)", file=sys.stderr)
    sys.exit(2)

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
PROMETHEUS_TLS_YML = PROMETHEUS_DIR / "prometheus-tls.yml"
RULES = PROMETHEUS_DIR / "rules" / "velostream.rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "rules" / "velostream.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "velostream-dashboard.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
GUIDE_TLS = ROOT / "config" / "guide" / "tls-config.yaml"
BROKER_SCRIPT = ROOT / "scripts" / "kafka-broker.sh"

# the guide's monitoring.metrics_port: the port prometheus.yml scrapes
METRICS_PORT = 9090
# the families the binary is gaining; a query reading one fails until it does
NEW_FAMILIES = {
    "velostream_checkpoint_age_seconds": "gauge, seconds since the job's newest checkpoint",
    "velostream_ready": "gauge, 1 when /ready answers 200",
    "velostream_circuit_breaker_state": "gauge, 0 closed, 1 half-open, 2 open",
    "velostream_e2e_latency_ms": "histogram, observed per input batch with results",
}
# the guide's dashboard query, which matches no series
GUIDE_QUERY = "histogram_quantile(0.99, velostream_processing_latency_ms)"
# the template variables, as the check fills them in
MATCH_ALL = ".+"
BINARY_WAIT = float(os.environ.get("VELOSTREAM_BINARY_WAIT", 45 * 60))
START_TIMEOUT = 60.0
# how long Prometheus collects before the queries must all answer
MIN_COLLECT = float(os.environ.get("VELOSTREAM_MONITORING_MIN_SECONDS", 20))
MAX_COLLECT = float(os.environ.get("VELOSTREAM_MONITORING_MAX_SECONDS", 240))
FEED_BATCH = 200
FEED_PAUSE = 0.5
APPLICATION = "monitored"


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = []
        self.infos = []

    def check(self, name, ok, detail=""):
        detail = "".join(c if c.isprintable() else "?" for c in str(detail))
        print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        return ok

    def info(self, text):
        print(f"     {text}", flush=True)

    def section(self, title):
        print(f"\n== {title}", flush=True)


R = Report()


class Stop(Exception):
    """The check cannot go on (exit status 2)."""


# ---------------------------------------------------------------- processes


class Started:
    """What this run started, stopped in reverse order however it ends."""

    def __init__(self):
        self.work = None
        self.feeder = None
        self.processes = []  # (name, Popen, seconds to wait after SIGTERM)
        self.broker_started = False

    def add(self, name, process, grace):
        self.processes.append((name, process, grace))
        return process

    def stop_all(self):
        # a second signal must not cut the stopping short
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if self.feeder:
            self.feeder.stop()
        for name, p, grace in reversed(self.processes):
            if p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                code = p.wait(timeout=grace)
                print(f"     {name} stopped (pid {p.pid}, exit status {code})", flush=True)
            except subprocess.TimeoutExpired:
                print(f"     {name} (pid {p.pid}) did not stop within {grace:.0f}s; killing it", flush=True)
                p.kill()
                p.wait()
        self.processes = []
        if self.broker_started:
            env = dict(os.environ)
            env.pop("KAFKA_BROKERS", None)
            result = subprocess.run([str(BROKER_SCRIPT), "stop"], env=env, capture_output=True, text=True)
            print(f"     {(result.stdout or result.stderr).strip()}", flush=True)
            self.broker_started = False


STARTED = Started()


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def run(args, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def clean_env():
    """The environment without the overrides the configuration loader applies
    (KAFKA_*, DB_*, VELOSTREAM__*): the check's own settings are the ones used."""
    return {k: v for k, v in os.environ.items()
            if not re.match(r"(KAFKA_|DB_|VELOSTREAM__)", k)}


def tail(path, lines=8):
    try:
        return " | ".join(Path(path).read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- tools


def ensure_tools():
    """promtool and prometheus (Debian package prometheus) and openssl; installed with apt-get when missing."""
    wanted = {"promtool": "prometheus", "prometheus": "prometheus", "openssl": "openssl"}
    missing = sorted({pkg for tool, pkg in wanted.items() if not shutil.which(tool)})
    if missing:
        if shutil.which("apt-get") and os.geteuid() == 0:
            print(f"installing {' '.join(missing)} (apt-get) ...", flush=True)
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            result = run(["apt-get", "install", "-y", "-qq", *missing], env=env)
            if result.returncode != 0:
                run(["apt-get", "update", "-qq"], env=env)
                result = run(["apt-get", "install", "-y", "-qq", *missing], env=env)
            if result.returncode != 0:
                print(result.stderr.strip()[-600:], file=sys.stderr)
        still = [t for t in wanted if not shutil.which(t)]
        if still:
            raise Stop(f"{', '.join(still)} not on PATH: install them (apt-get install -y prometheus openssl)")
    version = run(["prometheus", "--version"]).stdout.strip().splitlines()
    print(f"prometheus: {version[0] if version else 'unknown version'}")


# ---------------------------------------------------------------- certificates


# ---------------------------------------------------------------- static checks


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def check_promtool(certs, work):
    R.section("promtool")
    result = run(["promtool", "check", "config", PROMETHEUS_YML])
    R.check(f"promtool check config {PROMETHEUS_YML.relative_to(ROOT)} (with its rule files)",
            result.returncode == 0, " ".join((result.stdout + result.stderr).split())[-400:])
    result = run(["promtool", "check", "config", "--syntax-only", PROMETHEUS_TLS_YML])
    R.check(f"promtool check config --syntax-only {PROMETHEUS_TLS_YML.relative_to(ROOT)}",
            result.returncode == 0, " ".join((result.stdout + result.stderr).split())[-400:])
    # in full, with the certificate files it names replaced by the test's
    doc = load_yaml(PROMETHEUS_TLS_YML)
    files = {"ca_file": certs["ca.crt"], "cert_file": certs["prometheus.crt"], "key_file": certs["prometheus.key"]}
    named = []
    for job in doc.get("scrape_configs") or []:
        tls = job.get("tls_config") or {}
        for key in files:
            if key in tls:
                named.append(f"{job['job_name']}.{key}")
                tls[key] = str(files[key])
    doc["rule_files"] = [str((PROMETHEUS_TLS_YML.parent / f).resolve()) for f in doc.get("rule_files") or []]
    copy_path = Path(work, "prometheus-tls.check.yml")
    copy_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = run(["promtool", "check", "config", copy_path])
    R.check(f"promtool check config {PROMETHEUS_TLS_YML.name} with its TLS files at test certificates",
            result.returncode == 0 and len(named) == 3,
            (f"{', '.join(named)}; " if named else "no tls_config ca_file/cert_file/key_file; ")
            + " ".join((result.stdout + result.stderr).split())[-300:])
    result = run(["promtool", "check", "rules", RULES])
    R.check(f"promtool check rules {RULES.relative_to(ROOT)}", result.returncode == 0,
            " ".join((result.stdout + result.stderr).split())[-400:])
    result = run(["promtool", "test", "rules", RULE_TESTS], cwd=RULE_TESTS.parent)
    R.check(f"promtool test rules {RULE_TESTS.relative_to(ROOT)}", result.returncode == 0,
            " ".join((result.stdout + result.stderr).split())[-600:])


def rule_list():
    """(group, kind, name, expr, rule) for every rule of the rules file."""
    out = []
    for group in load_yaml(RULES).get("groups") or []:
        for rule in group.get("rules") or []:
            kind = "alert" if "alert" in rule else "record"
            out.append((group["name"], kind, rule.get(kind), rule["expr"], rule))
    return out


def check_rule_files():
    R.section("rules")
    rules = rule_list()
    alerts = [r for r in rules if r[1] == "alert"]
    records = [r for r in rules if r[1] == "record"]
    R.check("alert and recording rules", bool(alerts) and bool(records),
            f"{len(alerts)} alerts, {len(records)} recording rules")
    for _, _, name, _, rule in alerts:
        labels, ann = rule.get("labels") or {}, rule.get("annotations") or {}
        R.check(f"alert {name} has a severity and a summary",
                labels.get("severity") in ("critical", "warning", "info") and bool(ann.get("summary")),
                f"severity {labels.get('severity')}")
    scrape = [j for j in load_yaml(PROMETHEUS_YML).get("scrape_configs") or [] if j["job_name"] == "velostream"]
    R.check("prometheus.yml scrapes job velostream with honor_labels: true (Velostream's job label kept)",
            bool(scrape) and scrape[0].get("honor_labels") is True)
    tls = [j for j in load_yaml(PROMETHEUS_TLS_YML).get("scrape_configs") or [] if j["job_name"] == "velostream"]
    R.check("prometheus-tls.yml scrapes job velostream over https with honor_labels: true",
            bool(tls) and tls[0].get("scheme") == "https" and tls[0].get("honor_labels") is True)


def dashboard_panels(dashboard):
    """Every panel, those inside rows included."""
    out = []
    for p in dashboard.get("panels") or []:
        out.append(p)
        out.extend(p.get("panels") or [])
    return out


def dashboard_queries(dashboard):
    """(panel title, refId, expr) of every panel target."""
    out = []
    for p in dashboard_panels(dashboard):
        for t in p.get("targets") or []:
            if t.get("expr"):
                out.append((p.get("title", f"panel {p.get('id')}"), t.get("refId", "?"), t["expr"]))
    return out


VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def fill(expr, values):
    """Template variables replaced: Grafana's built-ins by fixed intervals, the others from `values`."""
    builtins = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}

    def sub(m):
        name = m.group(1) or m.group(2)
        return builtins.get(name, values.get(name, m.group(0)))

    return VARIABLE.sub(sub, expr)


def check_dashboard():
    R.section("Grafana dashboard and provisioning")
    try:
        dashboard = json.loads(DASHBOARD.read_text())
    except (OSError, ValueError) as e:
        R.check(f"{DASHBOARD.relative_to(ROOT)} is JSON", False, str(e))
        return None
    R.check(f"{DASHBOARD.relative_to(ROOT)} is JSON", True, dashboard.get("title", ""))
    R.check("the dashboard has a uid, a title and no fixed id (importable)",
            bool(dashboard.get("uid")) and bool(dashboard.get("title")) and dashboard.get("id") is None)
    panels = dashboard_panels(dashboard)
    ids = [p.get("id") for p in panels]
    dupes = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    R.check("panel ids are unique", not dupes, f"duplicated: {dupes}" if dupes else f"{len(panels)} panels")
    variables = {v["name"]: v for v in (dashboard.get("templating") or {}).get("list") or []}
    ds_vars = [n for n, v in variables.items() if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    R.check("a Prometheus data source variable", bool(ds_vars), ", ".join(ds_vars))
    no_query, wrong_ds = [], []
    for p in panels:
        if p.get("type") == "row":
            continue
        if not any(t.get("expr") for t in p.get("targets") or []):
            no_query.append(p.get("title"))
        refs = [p.get("datasource")] + [t.get("datasource") for t in p.get("targets") or []]
        for ref in refs:
            uid = ref.get("uid") if isinstance(ref, dict) else ref
            m = VARIABLE.fullmatch(uid) if isinstance(uid, str) else None
            if not m or (m.group(1) or m.group(2)) not in ds_vars:
                wrong_ds.append(f"{p.get('title')}: {ref!r}")
                break
    R.check("every panel has a query", not no_query, ", ".join(map(str, no_query)))
    R.check("every panel and query uses the data source variable", not wrong_ds, "; ".join(wrong_ds))
    used = set()
    texts = [e for _, _, e in dashboard_queries(dashboard)] + [
        v.get("query") if isinstance(v.get("query"), str) else (v.get("query") or {}).get("query", "")
        for v in variables.values() if v.get("type") == "query"]
    for text in texts:
        for m in VARIABLE.finditer(text or ""):
            used.add(m.group(1) or m.group(2))
    undefined = sorted(n for n in used if n not in variables and not n.startswith("__"))
    R.check("every template variable a query uses is defined", not undefined,
            ", ".join(undefined) if undefined else ", ".join(sorted(used)))
    overlaps = []
    laid = [p for p in dashboard.get("panels") or [] if "gridPos" in p]
    for i, a in enumerate(laid):
        for b in laid[i + 1:]:
            ga, gb = a["gridPos"], b["gridPos"]
            if ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"] and \
                    ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]:
                overlaps.append(f"{a.get('title')} / {b.get('title')}")
    R.check("no two panels overlap", not overlaps, "; ".join(overlaps))

    ds = load_yaml(PROVISIONING / "datasources" / "velostream-prometheus.yaml") or {}
    sources = ds.get("datasources") or []
    R.check("provisioning/datasources: apiVersion 1, a Prometheus data source with a url",
            ds.get("apiVersion") == 1 and any(s.get("type") == "prometheus" and s.get("url") for s in sources),
            ", ".join(f"{s.get('name')} {s.get('url')}" for s in sources))
    dp = load_yaml(PROVISIONING / "dashboards" / "velostream.yaml") or {}
    providers = dp.get("providers") or []
    R.check("provisioning/dashboards: apiVersion 1, a file provider with a path",
            dp.get("apiVersion") == 1 and any(p.get("type") == "file" and (p.get("options") or {}).get("path")
                                              for p in providers),
            ", ".join(str((p.get("options") or {}).get("path")) for p in providers))
    return dashboard


def documented_families():
    """name -> type of the metric families table of docs/api.md."""
    text = (ROOT / "docs" / "api.md").read_text()
    return dict(re.findall(r"^\| `([a-z][a-z0-9_]*)` \| (counter|gauge|histogram) \|", text, re.M))


def families_in(expr, known):
    """The metric families an expression reads (histogram suffixes folded)."""
    found = []
    for token in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        base = re.sub(r"_(bucket|count|sum)$", "", token)
        for name in (token, base):
            if name in known and name not in found:
                found.append(name)
                break
    return found


# ---------------------------------------------------------------- the binary


def wait_for_binary(path):
    """Waits (up to BINARY_WAIT) until `path` is an executable that answers --version and is not being written."""
    deadline = time.time() + BINARY_WAIT
    announced = False
    while True:
        problem = None
        if not path.is_file():
            problem = "does not exist yet"
        elif not os.access(path, os.X_OK):
            problem = "is not executable"
        else:
            size = path.stat().st_size
            time.sleep(2)
            if path.stat().st_size != size:
                problem = "is being written"
            else:
                try:
                    result = run([path, "--version"], timeout=60)
                    if result.returncode != 0:
                        problem = f"--version exited {result.returncode}"
                except (OSError, subprocess.TimeoutExpired) as e:
                    problem = f"--version failed: {e}"
        if problem is None:
            return
        if time.time() >= deadline:
            raise Stop(f"{path} {problem} after waiting {BINARY_WAIT / 60:.0f} minutes")
        if not announced:
            print(f"waiting for {path}: it {problem}; checking every 30 s for up to "
                  f"{BINARY_WAIT / 60:.0f} minutes", flush=True)
            announced = True
        time.sleep(30)


def exposition(text):
    """family -> {"type", "samples", "observations"} of a Prometheus text exposition."""
    families = {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            families.setdefault(m.group(1), {"type": m.group(2), "samples": 0, "observations": 0.0})
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)", line)
        if not m:
            continue
        name, value = m.group(1), m.group(3)
        family = name if name in families else re.sub(r"_(bucket|count|sum)$", "", name)
        entry = families.setdefault(family, {"type": "untyped", "samples": 0, "observations": 0.0})
        entry["samples"] += 1
        if name == family + "_count":
            try:
                entry["observations"] += float(value)
            except ValueError:
                pass
    return families


def family_state(name, families):
    """Why a family gives a query nothing, or None when it has data."""
    if name == "up" or name.startswith("scrape_"):
        return None
    f = families.get(name)
    if f is None:
        return "not exported by the binary"
    if f["samples"] == 0:
        return "exported without samples"
    if f["type"] == "histogram" and f["observations"] == 0:
        return "registered but never observed"
    return None


class Feeder:
    """Writes batches of trades to the topic with `velostream produce` until stopped."""

    def __init__(self, binary, brokers, topic, work):
        self.binary, self.brokers, self.topic, self.work = binary, brokers, topic, Path(work)
        self.done = threading.Event()
        self.process = None
        self.sent = 0
        self.failures = []
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def batch(self, n):
        now = int(time.time() * 1000)
        lines = [json.dumps({"symbol": f"S{(n * FEED_BATCH + i) % 23:02d}", "price": f"{10 + i % 90}.25",
                             "quantity": n * FEED_BATCH + i, "ts": now})
                 for i in range(FEED_BATCH)]
        lines.append("{not json: a malformed record per batch")
        path = self.work / "feed.jsonl"
        path.write_text("\n".join(lines) + "\n")
        return path

    def send(self, n):
        path = self.batch(n)
        self.process = subprocess.Popen(
            [str(self.binary), "produce", "--brokers", self.brokers, "--topic", self.topic,
             "--partitions", "3", "--key-field", "symbol", str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(), start_new_session=True)
        try:
            _, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        ok = self.process.returncode == 0
        self.process = None
        if ok:
            self.sent += FEED_BATCH + 1
        else:
            self.failures.append(err.strip().splitlines()[-1] if err.strip() else "no message")
        return ok

    def loop(self):
        n = 0
        while not self.done.is_set():
            self.send(n)
            n += 1
            self.done.wait(FEED_PAUSE)

    def start(self):
        self.thread.start()

    def stop(self):
        self.done.set()
        p = self.process
        if p and p.poll() is None:
            p.terminate()
        self.thread.join(timeout=70)


class Api:
    """HTTPS to the service's health port with the test's client certificate and bearer token."""

    def __init__(self, port, certs, token):
        self.port, self.token = port, token
        self.ctx = ssl.create_default_context(cafile=str(certs["ca.crt"]))
        self.ctx.load_cert_chain(str(certs["prometheus.crt"]), str(certs["prometheus.key"]))

    def call(self, method, path, body=None):
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)
            headers = {"Authorization": f"Bearer {self.token}"}
            if body is not None:
                headers["Content-Type"] = "application/json"
                body = json.dumps(body)
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.read().decode(errors="replace")
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            return None, f"{type(e).__name__}: {e}"


def plain_get(port, path, timeout=10):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return None, f"{type(e).__name__}: {e}"


class Prometheus:
    def __init__(self, port):
        self.port = port

    def get(self, path, **params):
        query = urllib.parse.urlencode(params, doseq=True)
        status, body = plain_get(self.port, f"{path}?{query}" if query else path, timeout=30)
        if status is None:
            return None, body
        try:
            doc = json.loads(body)
        except ValueError:
            return None, f"HTTP {status}: {body[:200]}"
        if doc.get("status") != "success":
            return None, f"{doc.get('errorType', 'error')}: {doc.get('error', body[:200])}"
        return doc.get("data"), None

    def query(self, expr):
        """(series, error): an instant vector's samples as (labels, float value)."""
        data, error = self.get("/api/v1/query", query=expr)
        if error:
            return None, error
        kind, result = data.get("resultType"), data.get("result")
        if kind == "vector":
            return [(s["metric"], float(s["value"][1])) for s in result], None
        if kind == "scalar":
            return [({}, float(result[1]))], None
        return [], None


SQL = """\
CREATE STREAM trades (symbol VARCHAR, price DECIMAL(12, 2), quantity BIGINT, ts TIMESTAMP)
WITH ('trades.type' = 'kafka_source', 'trades.topic' = '{topic}', 'trades.group.id' = '{topic}',
      'trades.event.time.field' = 'ts', 'trades.watermark.max_out_of_orderness' = '1s');

-- @name: notional
CREATE STREAM notional AS
SELECT symbol, price * quantity AS notional, 1000 / (quantity % 997) AS per_lot
FROM trades
WITH ('notional.type' = 'null');

-- @name: volume_per_second
CREATE STREAM volume_per_second AS
SELECT symbol, COUNT(*) AS trades, SUM(quantity) AS volume
FROM trades
GROUP BY symbol
WINDOW TUMBLING(ts, 1s)
WITH ('volume_per_second.type' = 'null');
"""


def broker_address():
    """The test broker's address, started when it is not running (and KAFKA_BROKERS names none)."""
    if os.environ.get("KAFKA_BROKERS"):
        print(f"kafka: KAFKA_BROKERS={os.environ['KAFKA_BROKERS']}")
        return os.environ["KAFKA_BROKERS"]
    status = run([BROKER_SCRIPT, "status"])
    if status.returncode != 0:
        result = run([BROKER_SCRIPT, "start"], timeout=600)
        if result.returncode != 0:
            raise Stop(f"scripts/kafka-broker.sh start failed: {(result.stderr or result.stdout).strip()[-400:]}")
        STARTED.broker_started = True
        print(f"kafka: {result.stdout.strip()} (started by this check; stopped at its end)")
    else:
        print(f"kafka: {status.stdout.strip()}")
    return run([BROKER_SCRIPT, "address"]).stdout.strip()


def service_config(work, certs, brokers, ports, tokens_file):
    return {
        "velostream": {
            "kafka": {"bootstrap_servers": brokers, "security_protocol": "PLAINTEXT"},
            "monitoring": {"bind_address": "127.0.0.1", "health_check_port": ports["health"],
                           "metrics_port": ports["metrics"], "probe_port": ports["probe"]},
            "state_dir": str(Path(work, "state")),
            "processing": {"checkpoint_interval": "2s"},
            "timeouts": {"connection_timeout": "5s"},
            "circuit_breaker": {"failure_threshold": 5, "recovery_timeout": "60s",
                                "failure_rate_threshold": 50.0, "min_calls_in_window": 10},
        },
        # the guide's tls-config.yaml (loaded first) with the test's files
        "security": {
            "tls": {"cert_file": str(certs["server.crt"]), "key_file": str(certs["server.key"]),
                    "ca_file": str(certs["ca.crt"])},
            "auth": {"mode": "token", "tokens_file": str(tokens_file)},
        },
    }


def prometheus_config(ports, certs):
    """prometheus.yml's velostream job at the probe port and prometheus-tls.yml's at the metrics port."""
    base = load_yaml(PROMETHEUS_YML)
    tls_doc = load_yaml(PROMETHEUS_TLS_YML)

    def rewrite(job, port):
        job = copy.deepcopy(job)
        job.pop("scrape_interval", None)
        job.pop("scrape_timeout", None)
        targets = [t for sc in job.get("static_configs") or [] for t in sc.get("targets") or []]
        rewritten = [f"127.0.0.1:{port}" for t in targets if t.rsplit(":", 1)[-1] == str(METRICS_PORT)]
        job["static_configs"] = [{"targets": rewritten}]
        return job, targets

    jobs, notes = [], []
    for job in base.get("scrape_configs") or []:
        if job["job_name"] == "velostream":
            j, was = rewrite(job, ports["probe"])
            jobs.append(j)
            notes.append(f"velostream: {', '.join(was)} -> 127.0.0.1:{ports['probe']} (probe_port, plain HTTP)")
        else:
            notes.append(f"{job['job_name']}: left out (not part of this check)")
    for job in tls_doc.get("scrape_configs") or []:
        if job["job_name"] == "velostream":
            j, was = rewrite(job, ports["metrics"])
            j["job_name"] = "velostream-tls"
            tls = j.setdefault("tls_config", {})
            tls.update(ca_file=str(certs["ca.crt"]), cert_file=str(certs["prometheus.crt"]),
                       key_file=str(certs["prometheus.key"]))
            # scraped to prove mutual TLS works; its samples would double every series
            j["metric_relabel_configs"] = [{"source_labels": ["__name__"], "regex": ".+", "action": "drop"}]
            jobs.append(j)
            notes.append(f"velostream-tls (prometheus-tls.yml): {', '.join(was)} -> 127.0.0.1:{ports['metrics']} "
                         "(metrics_port, mutual TLS; samples dropped after the scrape)")
    rule_files = [str((PROMETHEUS_YML.parent / f).resolve()) for f in base.get("rule_files") or []]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files,
        "scrape_configs": jobs,
    }
    return config, notes


def start_service(binary, work, certs, brokers):
    R.section("the service")
    ports = dict(zip(("health", "metrics", "probe", "prometheus"), free_ports(4)))
    token = secrets.token_hex(32)
    tokens_file = Path(work, "tokens.yaml")
    tokens_file.write_text(yaml.safe_dump([{"name": "monitoring-check", "role": "admin",
                                            "sha256": hashlib.sha256(token.encode()).hexdigest()}]))
    local = Path(work, "local.yaml")
    local.write_text(yaml.safe_dump(service_config(work, certs, brokers, ports, tokens_file), sort_keys=False))
    env = clean_env()
    log = open(Path(work, "service.log"), "w")
    args = [str(binary), "--config", str(GUIDE_TLS), "--config", str(local)]
    process = STARTED.add("velostream service", subprocess.Popen(
        args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), 40)
    R.info(f"{binary.name} --config config/guide/tls-config.yaml --config {local}")
    R.info(f"health (TLS) {ports['health']}, metrics (TLS) {ports['metrics']}, probe (HTTP) {ports['probe']}; "
           f"log {work}/service.log")
    api = Api(ports["health"], certs, token)
    deadline = time.time() + START_TIMEOUT
    status = None
    while time.time() < deadline and process.poll() is None:
        status, _ = api.call("GET", "/health")
        if status == 200:
            break
        time.sleep(0.3)
    if not R.check("the service answers GET /health over mutual TLS", status == 200,
                   f"exited with status {process.poll()}: {tail(Path(work, 'service.log'))}"
                   if process.poll() is not None else f"{status}"):
        raise Stop("the service did not start")
    return ports, api, process


def deploy(api, binary, brokers, work, topic):
    feeder = Feeder(binary, brokers, topic, work)
    # the topic exists (3 partitions) before the application reads it
    if not R.check(f"velostream produce creates and feeds topic {topic} on {brokers}", feeder.send(0),
                   "; ".join(feeder.failures[-1:])):
        raise Stop("cannot produce to the test broker")
    STARTED.feeder = feeder
    feeder.start()
    sql = SQL.format(topic=topic)
    status, body = api.call("POST", "/jobs", {"name": APPLICATION, "sql": sql})
    if not R.check(f"POST /jobs deploys application {APPLICATION} (a Kafka source, checkpoints every 2 s)",
                   status == 201, f"{status} {body[:300]}"):
        raise Stop("the application was not deployed")
    deadline = time.time() + 60
    jobs = {}
    while time.time() < deadline:
        status, body = api.call("GET", f"/jobs/{APPLICATION}")
        try:
            app = json.loads(body) if status == 200 else {}
        except ValueError:
            app = {}
        jobs = {j["name"]: j for j in app.get("jobs") or []}
        state = (app.get("status") or {}).get("state")
        if state == "running" and len(jobs) == 2 and all(j.get("records_in", 0) > 0 and j.get("last_checkpoint")
                                                         for j in jobs.values()):
            break
        if state == "failed" and not (app.get("status") or {}).get("retrying", True):
            break
        time.sleep(0.5)
    R.check(f"application {APPLICATION} runs: both jobs read records and have checkpointed",
            len(jobs) == 2 and all(j.get("records_in", 0) > 0 and j.get("last_checkpoint") for j in jobs.values()),
            "; ".join(f"{n}: {j.get('records_in')} in, checkpoint {(j.get('last_checkpoint') or {}).get('id')}"
                      for n, j in jobs.items()) or body[:300])
    return feeder


def start_prometheus(work, ports, certs):
    R.section("Prometheus")
    config, notes = prometheus_config(ports, certs)
    path = Path(work, "prometheus.yml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    for note in notes:
        R.info(note)
    result = run(["promtool", "check", "config", path])
    R.check("the generated configuration passes promtool check config", result.returncode == 0,
            " ".join((result.stdout + result.stderr).split())[-300:])
    storage = Path(work, "prometheus-data")
    storage.mkdir()
    log = open(Path(work, "prometheus.log"), "w")
    process = STARTED.add("prometheus", subprocess.Popen(
        ["prometheus", f"--config.file={path}", f"--storage.tsdb.path={storage}",
         f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--storage.tsdb.retention.time=1h"],
        cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), 20)
    R.info(f"prometheus on 127.0.0.1:{ports['prometheus']}; config {path}; log {work}/prometheus.log")
    deadline = time.time() + START_TIMEOUT
    status = None
    while time.time() < deadline and process.poll() is None:
        status, _ = plain_get(ports["prometheus"], "/-/ready")
        if status == 200:
            break
        time.sleep(0.3)
    if not R.check("prometheus is ready", status == 200,
                   f"exited: {tail(Path(work, 'prometheus.log'))}" if process.poll() is not None else f"{status}"):
        raise Stop("prometheus did not start")
    return Prometheus(ports["prometheus"]), process


# ---------------------------------------------------------------- evaluation


def evaluate_all(prom, dashboard):
    """Every query, rule and variable once: a dict of results for the final report."""
    values = {"job": MATCH_ALL, "instance": MATCH_ALL, "application": MATCH_ALL}
    variables = [v for v in (dashboard.get("templating") or {}).get("list") or [] if v.get("type") == "query"]
    for v in variables:
        values.setdefault(v["name"], MATCH_ALL)
    out = {"variables": [], "dashboard": [], "rules": [], "api_rules": None, "targets": None}
    for v in variables:
        q = v["query"] if isinstance(v["query"], str) else v["query"].get("query", "")
        m = re.fullmatch(r"\s*label_values\((?:(.*),\s*)?(\w+)\)\s*", q)
        if not m:
            out["variables"].append((v["name"], q, None, "not a label_values(...) query"))
            continue
        selector, label = fill(m.group(1) or "", values), m.group(2)
        params = {"match[]": selector} if selector else {}
        data, error = prom.get(f"/api/v1/label/{label}/values", **params)
        out["variables"].append((v["name"], q, data, error))
    for title, ref, expr in dashboard_queries(dashboard):
        filled = fill(expr, values)
        series, error = prom.query(filled)
        out["dashboard"].append((title, ref, expr, filled, series, error))
    for group, kind, name, expr, _ in rule_list():
        series, error = prom.query(expr)
        out["rules"].append((group, kind, name, expr, series, error))
    out["api_rules"] = prom.get("/api/v1/rules")
    out["targets"] = prom.get("/api/v1/targets")
    out["guide"] = prom.query(GUIDE_QUERY)
    return out


def with_values(series):
    return [s for s in series or [] if not math.isnan(s[1])]


def all_good(results):
    dash_ok = all(not e and with_values(s) for _, _, _, _, s, e in results["dashboard"])
    rules_ok = all(not e and (k == "alert" or s) for _, k, _, _, s, e in results["rules"])
    vars_ok = all(not e and d for _, _, d, e in results["variables"])
    data, error = results["api_rules"]
    health_ok = not error and all(r.get("health") == "ok" for g in data["groups"] for r in g["rules"])
    tdata, terror = results["targets"]
    up_ok = not terror and len([t for t in tdata["activeTargets"] if t.get("health") == "up"]) == 2
    return dash_ok and rules_ok and vars_ok and health_ok and up_ok


def explain(expr, families, known):
    """(binary_side, reasons): why a query reading `expr` had nothing."""
    reasons = []
    for name in families_in(expr, known):
        state = family_state(name, families)
        if state:
            reasons.append(f"{name} {state}" + (" (a family the binary is gaining)" if name in NEW_FAMILIES else ""))
    return bool(reasons), reasons


def report(results, families, known, prom):
    binary_side, other = [], []

    def failed(kind, label, expr, detail):
        side, reasons = explain(expr, families, known)
        if side:
            binary_side.append((kind, label, reasons))
        else:
            other.append((kind, label, detail))

    R.section("template variables (label values)")
    for name, q, data, error in results["variables"]:
        ok = not error and bool(data)
        R.check(f"${name}: {q}", ok, error or f"{len(data)} values: {', '.join(data[:6])}")
        if not ok:
            failed("variable", f"${name}", q, error or "no values")

    R.section(f"dashboard queries (template variables as {MATCH_ALL!r})")
    for title, ref, expr, filled, series, error in results["dashboard"]:
        valued = with_values(series)
        detail = error or (f"{len(series)} series" + (f", {len(series) - len(valued)} NaN" if len(valued) < len(series) else ""))
        ok = not error and bool(valued)
        R.check(f"[{title}] {ref}: {filled}", ok, detail)
        if not ok:
            failed("dashboard", f"[{title}] {ref}", expr,
                   error or ("only NaN (no observations in the window)" if series else "no series"))

    R.section("recording rules (expression evaluated)")
    for group, kind, name, expr, series, error in results["rules"]:
        if kind != "record":
            continue
        valued = with_values(series)
        ok = not error and bool(series)
        R.check(f"{name}", ok, error or f"{len(series)} series ({len(valued)} with a value)")
        if not ok:
            failed("recording rule", name, expr, error or "no series")
    R.section("alert rules (expression evaluated; no series is fine)")
    states = {}
    rules_data, rules_error = results["api_rules"]
    for g in (rules_data or {}).get("groups") or []:
        for r in g["rules"]:
            if r.get("type") == "alerting":
                states[r["name"]] = (r.get("state"), len(r.get("alerts") or []))
    for group, kind, name, expr, series, error in results["rules"]:
        if kind != "alert":
            continue
        state, n = states.get(name, ("not loaded", 0))
        R.check(f"{name}", not error,
                error or f"{len(series)} series; state {state}" + (f" ({n} alerts)" if n else ""))
        if error:
            other.append(("alert rule", name, error))

    R.section("rule health (/api/v1/rules)")
    if R.check("GET /api/v1/rules", not rules_error, rules_error or ""):
        data = rules_data
        loaded = {r["name"] for g in data["groups"] for r in g["rules"]}
        expected = {name for _, _, name, _, _ in rule_list()}
        R.check("every rule of the file is loaded", expected <= loaded,
                f"missing: {sorted(expected - loaded)}" if expected - loaded else f"{len(loaded)} rules in "
                f"{len(data['groups'])} groups")
        for g in data["groups"]:
            for r in g["rules"]:
                ok = r.get("health") == "ok"
                R.check(f"rule {r['name']} ({g['name']}) health {r.get('health')}", ok, r.get("lastError", ""))
                if not ok:
                    other.append(("rule health", r["name"], r.get("lastError") or r.get("health")))

    R.section("scrape targets")
    tdata, terror = results["targets"]
    if R.check("GET /api/v1/targets", not terror, terror or ""):
        for job in ("velostream", "velostream-tls"):
            ts = [t for t in tdata["activeTargets"] if t["labels"].get("job") == job]
            R.check(f"target {job} is up", bool(ts) and all(t.get("health") == "up" for t in ts),
                    "; ".join(f"{t['scrapeUrl']} {t.get('health')} {t.get('lastError', '')}".strip() for t in ts)
                    or "no target")
        series, error = prom.query('scrape_samples_scraped{job="velostream-tls"}')
        R.check("the mutual-TLS scrape (prometheus-tls.yml) reads the whole /metrics",
                not error and bool(series) and series[0][1] > 0,
                error or (f"{series[0][1]:.0f} samples per scrape" if series else "no scrape"))

    R.section("the deployment guide's dashboard query")
    series, error = results["guide"]
    R.check(f"{GUIDE_QUERY} matches no series (the family's series are _bucket, _sum and _count)",
            not error and not series, error or f"{len(series or [])} series")
    return binary_side, other


# ---------------------------------------------------------------- main


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print(f"usage: {sys.argv[0]} PATH/TO/velostream", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    binary = Path(sys.argv[1]).resolve()
    work = Path(tempfile.mkdtemp(prefix="velostream-monitoring-"))
    STARTED.work = work
    binary_side, other = [], []
    try:
        ensure_tools()
        try:
            certs = make_certificates(Path(tempfile.mkdtemp(dir=work, prefix="pki-")), client="prometheus",
                                      ca_name="velostream-monitoring-check-ca")
        except CertificateError as e:
            raise Stop(str(e)) from e
        check_promtool(certs, work)
        check_rule_files()
        dashboard = check_dashboard()
        if dashboard is None:
            raise Stop("the dashboard cannot be read")

        wait_for_binary(binary)
        # a copy: a build replacing the file meanwhile changes nothing here
        local_binary = Path(work, "velostream")
        shutil.copy2(binary, local_binary)
        stat = binary.stat()
        print(f"\nbinary: {binary} ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(stat.st_mtime))}, "
              f"{run([local_binary, '--version']).stdout.strip()})")
        brokers = broker_address()
        ports, api, service = start_service(local_binary, work, certs, brokers)
        topic = f"velostream-monitoring-{os.getpid()}-{int(time.time())}"
        feeder = deploy(api, local_binary, brokers, work, topic)

        # what the binary exports, as a scraper sees it
        status, text = plain_get(ports["probe"], "/metrics")
        R.check("/metrics on probe_port (plain HTTP) answers 200", status == 200, f"{status}")
        families = exposition(text if status == 200 else "")
        known = dict(documented_families())
        known.update({k: v["type"] for k, v in families.items()})
        R.info(f"{len(families)} families exported; documented in docs/api.md but not exported: "
               f"{', '.join(sorted(set(documented_families()) - set(families))) or 'none'}")
        for name, what in NEW_FAMILIES.items():
            state = family_state(name, families) or "exported, with data"
            R.info(f"new family {name} ({what}): {state}")

        prom, prometheus = start_prometheus(work, ports, certs)
        R.section(f"collecting: at least {MIN_COLLECT:.0f} s, until every query answers or {MAX_COLLECT:.0f} s")
        started = time.time()
        while True:
            time.sleep(3)
            elapsed = time.time() - started
            if service.poll() is not None:
                R.check("the service keeps running", False,
                        f"exited with status {service.poll()}: {tail(Path(work, 'service.log'))}")
                break
            if prometheus.poll() is not None:
                R.check("prometheus keeps running", False,
                        f"exited with status {prometheus.poll()}: {tail(Path(work, 'prometheus.log'))}")
                raise Stop("prometheus exited")
            if elapsed < MIN_COLLECT:
                continue
            results = evaluate_all(prom, dashboard)
            if all_good(results) or elapsed >= MAX_COLLECT:
                break
        R.info(f"collected for {time.time() - started:.0f} s; {feeder.sent} records produced"
               + (f", {len(feeder.failures)} produce runs failed (last: {feeder.failures[-1]})"
                  if feeder.failures else ""))
        # the exposition as it is now, to explain what is missing
        status, text = plain_get(ports["probe"], "/metrics")
        if status == 200:
            families = exposition(text)
            known.update({k: v["type"] for k, v in families.items()})
        results = evaluate_all(prom, dashboard)
        binary_side, other = report(results, families, known, prom)

        R.section("the service at the end")
        status, body = api.call("GET", "/ready")
        R.check("the service is still running and ready", service.poll() is None and status == 200,
                f"{status} {body[:200]}")
        status, body = api.call("GET", f"/jobs/{APPLICATION}")
        try:
            jobs = json.loads(body).get("jobs") or []
            R.info("; ".join(f"{j['name']}: {j['records_in']} in, {j['records_out']} out, "
                             f"{j['malformed_records']} malformed, checkpoint {(j['last_checkpoint'] or {}).get('id')}, "
                             f"p99 {j['latency_p99_ms']} ms, e2e p99 {j.get('e2e_latency_p99_ms')} ms"
                             for j in jobs))
        except (ValueError, AttributeError, KeyError, TypeError):
            R.info(body[:300])
    except Stop as e:
        print(f"FAIL cannot go on: {e}", flush=True)
        R.failed.append(str(e))
        stopped = 2
    except SystemExit as e:
        print(f"\ninterrupted (signal {int(e.code) - 128})", flush=True)
        R.failed.append("interrupted")
        stopped = int(e.code)
    else:
        stopped = 0
    finally:
        print("\n== stopping what the check started", flush=True)
        STARTED.stop_all()

    print(f"\n{R.passed} passed, {len(R.failed)} failed")
    if binary_side:
        print(f"\nfailed because the binary does not provide the data yet ({len(binary_side)}):")
        for kind, label, reasons in binary_side:
            print(f"  {kind} {label}: {'; '.join(reasons)}")
    if other:
        print(f"\nfailed for other reasons ({len(other)}):")
        for kind, label, detail in other:
            print(f"  {kind} {label}: {detail}")
    if R.failed:
        print("\nfailed checks:")
        for name in R.failed:
            print(f"  {name}")
        print(f"(logs and configuration kept in {work})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if stopped:
        return stopped
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
