#!/usr/bin/env python3
"""Checks the Kubernetes manifests of deploy/kubernetes against a built binary.

    scripts/check_manifests.py /var/tmp/velostream-target/debug/velostream

Renders deploy/kubernetes/base, overlays/blue, overlays/green, active and
backup with `kubectl kustomize`, and checks what the rendered objects say
against what the binary and its sources say:

- the ConfigMap holds the deployment guide's documents byte for byte
  (config/guide/), and the container loads every document of it;
- the container ports are the configuration's health_check_port,
  metrics_port and probe_port (or their defaults, read from
  crates/server/src/config/schema.rs), and every Service, probe and
  NetworkPolicy port is one of them;
- every environment variable the manifests set is one the binary reads
  (names collected from the sources, each also found in the binary), and
  every Secret key they use is created by the commands in
  deploy/kubernetes/README.md;
- the configuration's paths (the config files, state_dir, the TLS files,
  the tokens file, log files, applications) lie on the volumes mounted
  there, and the state directory on the pod's own volume claim;
- the overlays differ in name, environment label, consumer group and
  transactional-id prefix, and
  velostream-active selects one of them;
- deploy/kubernetes/backup: the CronJob's schedule meets the 15-minute
  RPO, concurrencyPolicy is Forbid and a run ends before the next is due,
  the Role bound to the CronJob's ServiceAccount grants exactly get/list on
  pods and create on pods/exec, the container runs non-root on a read-only
  root with resources and its image from an images: entry; in backup.sh,
  the label selector selects the StatefulSet's pods (each colour's alone
  with VELOSTREAM_COLOUR), every `velostream state backup` flag is one of
  the binary's `state backup --help`, every path passed into a pod
  (certificates, state directory, staging directory) lies on a volume the
  StatefulSet mounts and the certificates are keys of the README's Secret,
  the state directory is the configuration's state_dir, only the staging
  directory is removed, and the backup claim is mounted where the script
  writes;
- backup.sh, run against stand-in pods (a stand-in kubectl runs each pod's
  commands in a directory of its own, the binary's `state backup`
  included): every pod is tried when one fails, one line per pod, a
  non-zero exit, backups under <pod>/<UTC stamp>/, no staging left in the
  pods, old backups pruned;
- the binary, started with the container's arguments and environment
  (each mounted volume a temporary directory, the configuration rewritten
  to loopback, free ports, no Kafka cluster, no database and a local file
  application), answers the probes as the kubelet sends them with 200,
  serves the API and the metrics as configured, writes its state and logs
  where the volumes are, and drains on SIGTERM; and the backup CronJob's
  `velostream state backup`, with its flags, the pod's token and a client
  certificate, holds and releases it and writes a backup that, copied out
  with tar, restores.

Prints one PASS or FAIL line per check and a summary; exits 1 when a check
fails (2 when it cannot run at all).
"""

import copy
import hashlib
import http.client
import json
import mmap
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from test_certificates import make_certificates

try:
    import yaml
except ImportError:
    print("error: PyYAML is needed (python3 -m pip install pyyaml)", file=sys.stderr)
    sys.exit(2)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
GUIDE = ROOT / "config" / "guide"
NAMESPACE = "stream-processing"
RENDERINGS = {
    "base": "base",
    "blue": "overlays/blue",
    "green": "overlays/green",
    "active": "active",
}
COLOURS = ("blue", "green")
# what the deployment guide asks of each pod
GUIDE_RESOURCES = {
    "requests": {"memory": "8Gi", "cpu": "4"},
    "limits": {"memory": "16Gi", "cpu": "8"},
}
GUIDE_RBAC_RULES = [
    {"apiGroups": [""], "resources": ["pods", "services"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get"]},
]
START_TIMEOUT = 90.0
# deploy/kubernetes/backup and what the guide asks of backups (docs/operations.md)
BACKUP_DIRECTORY = "backup"
BACKUP_CRONJOB = "velostream-state-backup"
BACKUP_ACCOUNT = "velostream-backup"
BACKUP_RPO_MINUTES = 15
BACKUP_RETENTION_DAYS = 7
BACKUP_GRANTS = {("", "pods", "get"), ("", "pods", "list"), ("", "pods/exec", "create")}


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, name, ok, detail=""):
        detail = "".join(c if c.isprintable() else "?" for c in str(detail))
        line = f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else "")
        print(line, flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        return ok

    def section(self, title):
        print(f"\n== {title}", flush=True)


R = Report()


# ---------------------------------------------------------------- sources


def source_text(relative):
    return (ROOT / relative).read_text()


def source_defaults():
    """Ports and state directory defaults, as the service's sources define them."""
    schema = source_text("crates/server/src/config/schema.rs")
    service = source_text("crates/server/src/service.rs")

    def fn_value(name):
        m = re.search(rf"fn {name}\(\)\s*->\s*u16\s*\{{\s*(\d+)\s*\}}", schema)
        return int(m.group(1)) if m else None

    m = re.search(r'DEFAULT_STATE_DIR:\s*&str\s*=\s*"([^"]+)"', service)
    return {
        "health_check_port": fn_value("default_health_port"),
        "metrics_port": fn_value("default_metrics_port"),
        "state_dir": m.group(1) if m else None,
    }


def named_overrides():
    """KAFKA_* and DB_* variables and the keys they set (crates/server/src/config/mod.rs)."""
    text = source_text("crates/server/src/config/mod.rs")
    block = re.search(r"NAMED_OVERRIDES[^=]*=\s*&\[(.*?)\n\];", text, re.S)
    found = {}
    if block:
        for name, path in re.findall(r'\(\s*"([A-Z][A-Z0-9_]*)",\s*&\[([^\]]*)\]', block.group(1)):
            found[name] = re.findall(r'"([^"]+)"', path)
    return found


def override_prefix():
    m = re.search(r'OVERRIDE_PREFIX:\s*&str\s*=\s*"([A-Z_]+)"', source_text("crates/server/src/config/mod.rs"))
    return m.group(1) if m else None


def environment_names_in_sources():
    """Every environment variable name the binary's sources read, with where."""
    patterns = [
        re.compile(r'env\s*=\s*"([A-Z][A-Z0-9_]*)"'),  # clap arguments
        re.compile(r'env::var(?:_os)?\(\s*"([A-Z][A-Z0-9_]*)"'),
        re.compile(r'env\.get\(\s*"([A-Z][A-Z0-9_]*)"'),
    ]
    names = {}
    for path in sorted((ROOT / "crates").glob("*/src/**/*.rs")):
        text = path.read_text()
        for pattern in patterns:
            for name in pattern.findall(text):
                names.setdefault(name, str(path.relative_to(ROOT)))
    for name in named_overrides():
        names.setdefault(name, "crates/server/src/config/mod.rs (NAMED_OVERRIDES)")
    return names


class Binary:
    def __init__(self, path):
        self.path = path
        self._bytes = None

    def contains(self, text):
        if self._bytes is None:
            with open(self.path, "rb") as f:
                self._bytes = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._bytes.find(text.encode()) >= 0


def readme_secrets():
    """Secret name -> keys, from the `kubectl create secret generic` commands of the README."""
    text = (DEPLOY / "README.md").read_text()
    text = text.replace("\\\n", " ")
    found = {}
    for line in text.splitlines():
        m = re.search(r"create secret generic\s+(\S+)(.*)", line)
        if not m:
            continue
        keys = set()
        for kind, spec in re.findall(r"--from-(literal|file)=(\S+)", m.group(2)):
            if kind == "literal" or "=" in spec:
                keys.add(spec.split("=", 1)[0])
            else:
                keys.add(os.path.basename(spec))
        found.setdefault(m.group(1), set()).update(keys)
    return found


# ---------------------------------------------------------------- configuration


def substitute(text, env):
    """${VAR} and ${VAR:-default}, as the configuration loader does."""
    out, rest, missing = [], text, []
    while "${" in rest:
        start = rest.index("${")
        out.append(rest[:start])
        after = rest[start + 2:]
        end = after.find("}")
        if end < 0:
            raise ValueError("an unclosed ${")
        inner = after[:end]
        name, default = inner.split(":-", 1) if ":-" in inner else (inner, None)
        value = env.get(name)
        if value is not None and (value != "" or default is None):
            out.append(value)
        elif default is not None:
            out.append(default)
        else:
            missing.append(name)
        rest = after[end + 1:]
    out.append(rest)
    return "".join(out), missing


def references(text):
    return {m.split(":-", 1)[0] for m in re.findall(r"\$\{([^}]*)\}", text)}


def merge(into, other):
    if isinstance(into, dict) and isinstance(other, dict):
        for k, v in other.items():
            into[k] = merge(into[k], v) if k in into else v
        return into
    return other


def set_path(doc, path, value):
    node = doc
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def effective_config(texts, env):
    """The merged configuration with the environment's overrides applied."""
    merged, missing = {}, []
    for text in texts:
        substituted, absent = substitute(text, env)
        missing += absent
        merged = merge(merged, yaml.safe_load(substituted) or {})
    for name, path in named_overrides().items():
        if name in env:
            set_path(merged, path, env[name])
    prefix = override_prefix() or "VELOSTREAM__"
    for name in sorted(env):
        if name.startswith(prefix):
            path = [p.lower() for p in name[len(prefix):].split("__")]
            try:
                value = yaml.safe_load(env[name])
            except yaml.YAMLError:
                value = env[name]
            set_path(merged, path, value)
    return merged, missing


def dig(doc, *path, default=None):
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return default
        doc = doc[key]
    return doc


class Settings:
    """What the checks need from an effective configuration."""

    def __init__(self, config, defaults):
        v = config.get("velostream") or {}
        mon = v.get("monitoring") or {}
        self.health_port = mon.get("health_check_port", defaults["health_check_port"])
        self.metrics_port = mon.get("metrics_port", defaults["metrics_port"])
        self.probe_port = mon.get("probe_port")
        self.state_dir = v.get("state_dir") or defaults["state_dir"]
        self.applications = [a if isinstance(a, str) else a.get("path") for a in v.get("applications") or []]
        self.kafka = v.get("kafka") or {}
        self.group_id = self.kafka.get("group_id", self.kafka.get("group.id"))
        self.transactional_id_prefix = self.kafka.get("transactional_id_prefix")
        self.guarantee = dig(v, "processing", "guarantee", default="at_least_once")
        tls = dig(config, "security", "tls") or {}
        self.tls_enabled = bool(tls.get("enabled", False))
        self.tls_files = {k: tls[k] for k in ("cert_file", "key_file", "ca_file") if tls.get(k)}
        self.client_auth = tls.get("client_auth", "none")
        auth = dig(config, "security", "auth") or {}
        self.auth_mode = auth.get("mode")
        self.tokens_file = auth.get("tokens_file")
        outputs = dig(config, "logging", "outputs") or []
        self.log_files = [o["path"] for o in outputs if isinstance(o, dict) and o.get("type") == "file"]
        self.syslog_ports = [o.get("port", 514) for o in outputs if isinstance(o, dict) and o.get("type") == "syslog"]
        clusters = []
        bootstrap = self.kafka.get("bootstrap_servers", self.kafka.get("bootstrap.servers"))
        if bootstrap:
            clusters.append(str(bootstrap))
        databases = []
        regions = config.get("regions") or {}
        for role in ("primary", "secondary"):
            endpoints = dig(regions, role, "endpoints") or {}
            if endpoints.get("kafka"):
                clusters.append(endpoints["kafka"])
            if endpoints.get("database"):
                databases.append(endpoints["database"])
        db = v.get("database") or {}
        if db.get("host"):
            databases.append(f"{db['host']}:{db.get('port', 5432)}")
        self.kafka_ports = sorted({int(s.rsplit(":", 1)[1]) for c in clusters for s in c.split(",") if ":" in s})
        self.database_ports = sorted({int(d.rsplit(":", 1)[1]) if ":" in d else 5432 for d in databases})


# ---------------------------------------------------------------- manifests


def render(directory):
    result = subprocess.run(["kubectl", "kustomize", str(DEPLOY / directory)], capture_output=True, text=True)
    if result.returncode != 0:
        return None, result.stderr.strip()
    return [d for d in yaml.safe_load_all(result.stdout) if d], ""


def of_kind(objects, kind):
    return [o for o in objects if o.get("kind") == kind]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Pod:
    """The StatefulSet of a rendering and the pieces of its pod the checks use."""

    def __init__(self, objects):
        sets = of_kind(objects, "StatefulSet")
        self.statefulset = sets[0] if len(sets) == 1 else None
        self.count = len(sets)
        if not self.statefulset:
            return
        spec = self.statefulset["spec"]
        self.template = spec["template"]
        self.labels = self.template["metadata"].get("labels", {})
        self.spec = self.template["spec"]
        containers = self.spec.get("containers", [])
        self.container = next((c for c in containers if c.get("name") == "velostream"), containers[0])
        self.volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        self.claims = {t["metadata"]["name"]: t for t in spec.get("volumeClaimTemplates", [])}
        self.mounts = self.container.get("volumeMounts", [])
        self.ports = {p.get("name"): p["containerPort"] for p in self.container.get("ports", [])}
        self.configmaps = {c["metadata"]["name"]: c for c in of_kind(objects, "ConfigMap")}

    def port(self, ref):
        if isinstance(ref, int):
            return ref
        if isinstance(ref, str) and ref.isdigit():
            return int(ref)
        return self.ports.get(ref)

    def volume_kind(self, name):
        if name in self.claims:
            return "volumeClaimTemplate"
        volume = self.volumes.get(name, {})
        for kind in ("configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected", "hostPath"):
            if kind in volume:
                return kind
        return "unknown"

    def mount_of(self, path):
        """The mount holding `path` (the deepest one), or None."""
        best = None
        for m in self.mounts:
            mp = m["mountPath"].rstrip("/") or "/"
            if path == mp or path.startswith(mp + "/"):
                if best is None or len(mp) > len(best["mountPath"].rstrip("/")):
                    best = m
        return best

    def configmap_of(self, mount):
        volume = self.volumes.get(mount["name"], {})
        name = dig(volume, "configMap", "name")
        return self.configmaps.get(name)

    def secret_of(self, mount):
        return dig(self.volumes.get(mount["name"], {}), "secret", "secretName")

    def config_files(self):
        """The --config files of the container's arguments, or an error."""
        args = list(self.container.get("command", [])[1:]) + list(self.container.get("args", []))
        files, i = [], 0
        while i < len(args):
            if args[i] == "--config" and i + 1 < len(args):
                files.append(args[i + 1])
                i += 2
            elif args[i].startswith("--config="):
                files.append(args[i].split("=", 1)[1])
                i += 1
            else:
                return files, f"unexpected argument {args[i]!r}"
        return files, None

    def config_texts(self):
        """(path, text) of each --config file, read from the ConfigMap mounted there."""
        files, _ = self.config_files()
        out = []
        for f in files:
            mount = self.mount_of(f)
            cm = self.configmap_of(mount) if mount else None
            key = os.path.relpath(f, mount["mountPath"]) if mount else None
            out.append((f, (cm or {}).get("data", {}).get(key)))
        return out

    def env(self, secret_value=lambda name, key: f"<{name}/{key}>"):
        """The container's environment: values, Secret references resolved by `secret_value`."""
        values = {}
        for e in self.container.get("env", []):
            if "value" in e:
                values[e["name"]] = str(e["value"])
            else:
                ref = dig(e, "valueFrom", "secretKeyRef")
                if ref:
                    values[e["name"]] = secret_value(ref["name"], ref["key"])
                else:
                    values[e["name"]] = f"<{e['name']}>"
        return values


# ---------------------------------------------------------------- static checks


def check_guide_copies():
    R.section("the guide's documents")
    for guide in sorted(GUIDE.glob("*.yaml")):
        copy_path = DEPLOY / "base" / "config" / guide.name
        R.check(
            f"base/config/{guide.name} is byte-identical to config/guide/{guide.name}",
            copy_path.exists() and copy_path.read_bytes() == guide.read_bytes(),
            "" if copy_path.exists() else "missing",
        )


def check_rendering(name, objects, pod, defaults, env_names, binary, secrets_made):
    label = f"[{name}]"
    R.section(f"{DEPLOY.relative_to(ROOT)}/{RENDERINGS[name]}")
    wrong_ns = [f"{o['kind']}/{o['metadata']['name']}" for o in objects if o["metadata"].get("namespace") != NAMESPACE]
    R.check(f"{label} every object is in namespace {NAMESPACE}", not wrong_ns, ", ".join(wrong_ns))
    if not R.check(f"{label} one StatefulSet", pod.count == 1, f"{pod.count} found"):
        return None
    sts = pod.statefulset
    spec = sts["spec"]
    R.check(f"{label} 3 replicas", spec.get("replicas") == 3, f"replicas {spec.get('replicas')}")
    R.check(f"{label} selector matches the pod labels",
            selects(spec["selector"].get("matchLabels"), pod.labels), json.dumps(spec["selector"]))

    # configuration documents
    files, bad_arg = pod.config_files()
    R.check(f"{label} container arguments are --config FILE pairs", files and not bad_arg,
            bad_arg or " ".join(files))
    texts = pod.config_texts()
    for f, text in texts:
        mount = pod.mount_of(f)
        R.check(f"{label} {f} is a document of a mounted ConfigMap", text is not None,
                f"mounted from {pod.volume_kind(mount['name'])} {mount['name']}" if mount else "no volume mounted there")
    config_cms = {id(pod.configmap_of(pod.mount_of(f))): pod.configmap_of(pod.mount_of(f))
                  for f, _ in texts if pod.mount_of(f) and pod.configmap_of(pod.mount_of(f))}
    for cm in config_cms.values():
        loaded = {os.path.basename(f) for f, _ in texts}
        unused = sorted(set(cm.get("data", {})) - loaded)
        R.check(f"{label} every document of ConfigMap {cm['metadata']['name']} is loaded", not unused,
                "not loaded: " + ", ".join(unused) if unused else f"{len(cm['data'])} documents")
        for guide in sorted(GUIDE.glob("*.yaml")):
            data = cm.get("data", {}).get(guide.name)
            R.check(f"{label} ConfigMap document {guide.name} is config/guide/{guide.name} byte for byte",
                    data is not None and data.encode() == guide.read_bytes(),
                    "missing" if data is None else "")
    if any(t is None for _, t in texts):
        return None
    env_static = pod.env()
    config, missing = effective_config([t for _, t in texts], env_static)
    R.check(f"{label} every ${{VAR}} of the configuration is set in the pod (or has a default)", not missing,
            ", ".join(missing))
    s = Settings(config, defaults)

    # ports
    wanted = {"health_check_port": s.health_port, "metrics_port": s.metrics_port}
    if s.probe_port is not None:
        wanted["probe_port"] = s.probe_port
    numbers = set(pod.ports.values())
    for key, port in wanted.items():
        R.check(f"{label} container port for monitoring.{key} {port}", port in numbers,
                f"container ports {sorted(numbers)}")
    extra = sorted(numbers - set(wanted.values()))
    R.check(f"{label} no container port the service does not listen on", not extra,
            f"extra: {extra}" if extra else f"{sorted(numbers)}")

    # probes: the kubelet sends no client certificate and does not verify the server's
    serves_probes = {s.health_port: "HTTPS" if s.tls_enabled else "HTTP"}
    if s.probe_port is not None:
        serves_probes[s.probe_port] = "HTTP"
    for kind, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        probe = pod.container.get(kind)
        get = (probe or {}).get("httpGet")
        if not R.check(f"{label} {kind} is httpGet {path}", bool(get) and get.get("path") == path,
                       json.dumps(get) if get else "missing"):
            continue
        port = pod.port(get.get("port"))
        scheme = get.get("scheme", "HTTP").upper()
        expected = serves_probes.get(port)
        reason = ""
        if expected is None:
            reason = f"port {port} does not serve {path} (health {s.health_port}, probe {s.probe_port})"
        elif expected != scheme:
            reason = f"port {port} speaks {expected}, the probe {scheme}"
        elif port == s.health_port and s.tls_enabled and s.client_auth == "required":
            reason = f"port {port} requires a client certificate (security.tls.client_auth: required), which the kubelet does not send"
        R.check(f"{label} {kind} port and scheme reach {path} without a client certificate", not reason,
                reason or f"{scheme} port {port}")

    # services
    services = {o["metadata"]["name"]: o for o in of_kind(objects, "Service")}
    headless = services.get(spec.get("serviceName"))
    R.check(f"{label} serviceName {spec.get('serviceName')} is a headless Service selecting the pods",
            bool(headless) and headless["spec"].get("clusterIP") == "None"
            and selects(headless["spec"].get("selector"), pod.labels))
    for svc_name, svc in services.items():
        ok = selects(svc["spec"].get("selector"), pod.labels)
        R.check(f"{label} Service {svc_name} selects the pods", ok, json.dumps(svc["spec"].get("selector")))
        for p in svc["spec"].get("ports", []):
            target = pod.port(p.get("targetPort", p["port"]))
            R.check(f"{label} Service {svc_name} port {p['port']} reaches a port the service listens on",
                    target in wanted.values(), f"targetPort {p.get('targetPort')} -> {target}")
    api = [n for n, v in services.items() if n.startswith("velostream-api")]
    metrics = [n for n, v in services.items() if n.startswith("velostream-metrics")]
    R.check(f"{label} an API Service on {s.health_port}", any(
        any(pod.port(p.get("targetPort")) == s.health_port and p["port"] == s.health_port for p in services[n]["spec"]["ports"])
        for n in api), ", ".join(api))
    R.check(f"{label} a metrics Service on {s.metrics_port}", any(
        any(pod.port(p.get("targetPort")) == s.metrics_port and p["port"] == s.metrics_port for p in services[n]["spec"]["ports"])
        for n in metrics), ", ".join(metrics))

    # environment
    prefix = override_prefix() or "VELOSTREAM__"
    referenced = set().union(*(references(t) for _, t in texts))
    for e in pod.container.get("env", []):
        n = e["name"]
        if n.startswith(prefix):
            ok = binary.contains(prefix)
            where = f"a {prefix} override of {'.'.join(p.lower() for p in n[len(prefix):].split('__'))} (the key is checked by starting the binary)"
        elif n in env_names:
            ok = binary.contains(n)
            where = f"read in {env_names[n]}" + ("" if ok else "; not found in the binary")
        elif n in referenced:
            ok, where = True, "referenced as ${" + n + "} by the configuration"
        else:
            ok, where = False, "no source, configuration or override reads it"
        R.check(f"{label} env {n} is read by the binary", ok, where)
    for e in pod.container.get("env", []):
        ref = dig(e, "valueFrom", "secretKeyRef")
        if ref:
            R.check(f"{label} env {e['name']} uses key {ref['key']} of Secret {ref['name']}, which the README creates",
                    ref["key"] in secrets_made.get(ref["name"], set()),
                    f"README creates {sorted(secrets_made.get(ref['name'], set()))}")

    # mounts and paths
    mps = [m["mountPath"].rstrip("/") for m in pod.mounts]
    nested = [(a, b) for a in mps for b in mps if a != b and b.startswith(a + "/")]
    R.check(f"{label} no volume is mounted inside another", not nested, ", ".join(f"{b} in {a}" for a, b in nested))
    for m in pod.mounts:
        R.check(f"{label} mount {m['mountPath']} has a volume",
                m["name"] in pod.volumes or m["name"] in pod.claims, m["name"])

    def on(path, what, kinds, writable=False, key_in=None):
        return check_on(label, pod, secrets_made, path, what, kinds, writable, key_in)

    for f in files:
        on(f, "config file", ["configMap"], key_in="configMap")
    on(s.state_dir, "state directory (velostream.state_dir)", ["volumeClaimTemplate"], writable=True)
    mount = pod.mount_of(s.state_dir)
    if mount and mount["name"] in pod.claims:
        modes = pod.claims[mount["name"]]["spec"].get("accessModes", [])
        R.check(f"{label} the state volume is one ReadWriteOnce claim per pod", modes == ["ReadWriteOnce"], f"{modes}")
    for key, path in s.tls_files.items():
        on(path, f"security.tls.{key}", ["secret"], key_in="secret")
    if s.tokens_file:
        on(s.tokens_file, "security.auth.tokens_file", ["secret"], key_in="secret")
    for path in s.log_files:
        on(os.path.dirname(path), "log directory of", ["emptyDir", "volumeClaimTemplate", "persistentVolumeClaim"],
           writable=True)
    for path in s.applications:
        on(path, "application", ["configMap"], key_in="configMap")
    if dig(pod.container, "securityContext", "readOnlyRootFilesystem"):
        R.check(f"{label} /tmp is writable under readOnlyRootFilesystem",
                bool(pod.mount_of("/tmp")) and not pod.mount_of("/tmp").get("readOnly"))

    # applications: the consumer group and transactional ids are the deployment's
    for path in s.applications:
        mount = pod.mount_of(path)
        cm = pod.configmap_of(mount) if mount else None
        sql = (cm or {}).get("data", {}).get(os.path.relpath(path, mount["mountPath"]) if mount else "", "")
        own = re.findall(r"'([^']*(?:group\.id|transactional\.id))'\s*=", sql)
        R.check(f"{label} application {os.path.basename(path)} leaves group.id and transactional.id to the deployment",
                not own, "sets " + ", ".join(own) if own else "")
    R.check(f"{label} processing.guarantee is not exactly_once",
            s.guarantee != "exactly_once",
            "every replica and both colours would use the same transactional.id velostream-<statement>"
            if s.guarantee == "exactly_once" else s.guarantee)

    # pod security and resources
    psc = pod.spec.get("securityContext", {})
    for key, value in (("runAsUser", 1000), ("runAsGroup", 1000), ("fsGroup", 1000), ("runAsNonRoot", True)):
        R.check(f"{label} pod securityContext {key} {value}", psc.get(key) == value, f"{psc.get(key)}")
    R.check(f"{label} resources as in the guide", pod.container.get("resources") == GUIDE_RESOURCES,
            json.dumps(pod.container.get("resources")))
    grace = pod.spec.get("terminationGracePeriodSeconds", 30)
    drain = dig(config, "velostream", "timeouts", "operation_timeout", default="30s")
    R.check(f"{label} terminationGracePeriodSeconds {grace} covers the drain (operation_timeout {drain})",
            grace > seconds(drain))

    # disruption budget
    pdbs = of_kind(objects, "PodDisruptionBudget")
    R.check(f"{label} a PodDisruptionBudget minAvailable 2 selecting the pods",
            any(p["spec"].get("minAvailable") == 2 and selects(dig(p, "spec", "selector", "matchLabels"), pod.labels)
                for p in pdbs))

    # network policy
    policies = [p for p in of_kind(objects, "NetworkPolicy") if selects(dig(p, "spec", "podSelector", "matchLabels"), pod.labels)]
    if R.check(f"{label} a NetworkPolicy selects the pods", bool(policies)):
        ingress = [r for p in policies for r in p["spec"].get("ingress", [])]
        egress = [r for p in policies for r in p["spec"].get("egress", [])]

        def allows(rules, port, protocol="TCP", peer=None):
            for r in rules:
                ports = r.get("ports")
                if ports and not any(int(pod.port(x.get("port")) or 0) == port and x.get("protocol", "TCP") == protocol
                                     for x in ports):
                    continue
                peers = r.get("from", r.get("to"))
                if peer is None or not peers or any(peer(x) for x in peers):
                    return True
            return False

        gateway = lambda x: dig(x, "podSelector", "matchLabels", "app") == "gateway"
        prometheus = lambda x: dig(x, "podSelector", "matchLabels", "app") == "prometheus"
        dns = lambda x: dig(x, "podSelector", "matchLabels", "k8s-app") == "kube-dns"
        R.check(f"{label} ingress to {s.health_port} from the gateway", allows(ingress, s.health_port, peer=gateway))
        R.check(f"{label} ingress to {s.metrics_port} from Prometheus", allows(ingress, s.metrics_port, peer=prometheus))
        if s.probe_port is not None:
            R.check(f"{label} ingress to {s.probe_port} (plain-HTTP /metrics) from Prometheus",
                    allows(ingress, s.probe_port, peer=prometheus))
        R.check(f"{label} egress to cluster DNS (UDP 53)", allows(egress, 53, "UDP", peer=dns))
        for port in s.kafka_ports:
            R.check(f"{label} egress to Kafka port {port}", allows(egress, port))
        for port in s.database_ports:
            R.check(f"{label} egress to PostgreSQL port {port}", allows(egress, port))
        for port in s.syslog_ports:
            R.check(f"{label} egress to syslog UDP {port}", allows(egress, port, "UDP"))

    # RBAC
    sa = pod.spec.get("serviceAccountName")
    accounts = {o["metadata"]["name"] for o in of_kind(objects, "ServiceAccount")}
    R.check(f"{label} ServiceAccount {sa} exists", sa in accounts, ", ".join(sorted(accounts)))
    roles = {o["metadata"]["name"]: o for o in of_kind(objects, "Role")}
    bound = [b for b in of_kind(objects, "RoleBinding")
             if any(x.get("kind") == "ServiceAccount" and x.get("name") == sa for x in b.get("subjects", []))]
    R.check(f"{label} a RoleBinding gives {sa} the guide's Role",
            any(roles.get(b["roleRef"]["name"], {}).get("rules") == GUIDE_RBAC_RULES for b in bound))
    return s


def seconds(duration):
    """A configuration duration in seconds: an integer is milliseconds, text a number and a unit."""
    if isinstance(duration, int):
        return duration / 1000
    m = re.fullmatch(r"\s*([\d.]+)\s*([a-z]*)\s*", str(duration).lower())
    if not m:
        return 0
    unit = m.group(2)
    if unit in ("", "ms") or unit.startswith("millisecond"):
        scale = 0.001
    else:
        scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(unit[:1], 1)
    return float(m.group(1)) * scale


def check_colours(rendered, pods, settings):
    R.section("blue and green")
    if not all(c in pods and pods[c].statefulset for c in COLOURS):
        R.check("both colours render a StatefulSet", False)
        return
    names = {c: pods[c].statefulset["metadata"]["name"] for c in COLOURS}
    R.check("the colours' StatefulSets have their own names", names["blue"] != names["green"], json.dumps(names))
    for c in COLOURS:
        p = pods[c]
        R.check(f"[{c}] pods, StatefulSet and selector labelled environment: {c}",
                p.labels.get("environment") == c
                and p.statefulset["metadata"].get("labels", {}).get("environment") == c
                and dig(p.statefulset, "spec", "selector", "matchLabels", "environment") == c)
    shared = sorted({(o["kind"], o["metadata"]["name"]) for o in rendered["blue"]}
                    & {(o["kind"], o["metadata"]["name"]) for o in rendered["green"]})
    R.check("the colours share no object (both apply to one namespace)", not shared,
            ", ".join(f"{k}/{n}" for k, n in shared))
    groups = {c: settings[c].group_id if settings.get(c) else None for c in COLOURS}
    R.check("each colour has its own Kafka consumer group (velostream.kafka.group_id)",
            all(groups.values()) and groups["blue"] != groups["green"], json.dumps(groups))
    prefixes = {c: settings[c].transactional_id_prefix if settings.get(c) else None for c in COLOURS}
    R.check("each colour has its own transactional ids (velostream.kafka.transactional_id_prefix)",
            all(prefixes.values()) and prefixes["blue"] != prefixes["green"], json.dumps(prefixes))
    active = [o for o in rendered.get("active") or [] if o.get("kind") == "Service" and o["metadata"]["name"] == "velostream-active"]
    if R.check("Service velostream-active exists", bool(active)):
        svc = active[0]
        selector = svc["spec"].get("selector", {})
        chosen = [c for c in COLOURS if selects(selector, pods[c].labels)]
        R.check("velostream-active selects the pods of exactly one colour by environment",
                len(chosen) == 1 and "environment" in selector, json.dumps(selector))
        R.check(f"velostream-active is in namespace {NAMESPACE}", svc["metadata"].get("namespace") == NAMESPACE)
        if len(chosen) == 1:
            c = chosen[0]
            for p in svc["spec"].get("ports", []):
                target = pods[c].port(p.get("targetPort", p["port"]))
                R.check(f"velostream-active port {p['port']} reaches {c}'s health_check_port",
                        target == settings[c].health_port, f"-> {target}")


# ---------------------------------------------------------------- the state backup


def cron_minutes(field, low, high):
    """The values of one cron field (`*`, `*/n`, `a`, `a-b`, `a-b/n`, lists), or None."""
    values = set()
    for part in field.split(","):
        span, _, step = part.partition("/")
        if not (step.isdigit() or step == ""):
            return None
        step = int(step) if step else 1
        if span == "*":
            start, end = low, high
        elif re.fullmatch(r"\d+-\d+", span):
            start, end = map(int, span.split("-"))
        elif span.isdigit():
            start, end = int(span), high if step > 1 else int(span)
        else:
            return None
        if step < 1 or start < low or end > high:
            return None
        values.update(range(start, end + 1, step))
    return sorted(values)


def schedule_gaps(schedule):
    """(shortest, longest) minutes between the runs of a daily cron schedule, or None."""
    fields = str(schedule).split()
    if len(fields) != 5 or fields[2:] != ["*", "*", "*"]:
        return None
    minutes, hours = cron_minutes(fields[0], 0, 59), cron_minutes(fields[1], 0, 23)
    if not minutes or not hours:
        return None
    runs = sorted(h * 60 + m for h in hours for m in minutes)
    gaps = [b - a for a, b in zip(runs, runs[1:])] + [runs[0] + 24 * 60 - runs[-1]]
    return min(gaps), max(gaps)


def shell_expand(word, env):
    """`${NAME}`, `${NAME:-word}`, `${NAME:+word}` and `${NAME:?}` of a shell word, for
    the names in `env`; any other expansion (the script's own variables) is left as written."""
    out, i = [], 0
    while True:
        start = word.find("${", i)
        if start < 0:
            out.append(word[i:])
            return "".join(out)
        depth, j = 0, start
        while j < len(word):
            if word.startswith("${", j):
                depth, j = depth + 1, j + 2
                continue
            if word[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        if j >= len(word):
            out.append(word[i:])
            return "".join(out)
        out.append(word[i:start])
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+?])(.*))?", word[start + 2:j], re.S)
        if m and m.group(1) in env:
            value, op, alternative = env[m.group(1)], m.group(2), m.group(3) or ""
            if op == ":-" and not value:
                value = shell_expand(alternative, env)
            elif op == ":+":
                value = shell_expand(alternative, env) if value else ""
            out.append(value)
        else:
            out.append(word[start:j + 1])
        i = j + 1


def shell_commands(script):
    """The simple commands of a shell script, each a list of words (quotes removed,
    redirections and keywords dropped): as much of sh as the backup script needs."""
    text = script.replace("\\\n", " ")
    text = re.sub(r"(\|\||&&|\|)[ \t]*\n", r"\1 ", text)
    keywords = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}"}
    commands = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = ""
        try:
            tokens = list(lexer)
        except ValueError:
            continue
        current, skip = [], False
        for token in tokens:
            if skip:
                skip = False
            elif set(token) <= set("<>&|") and ("<" in token or ">" in token):
                if current and current[-1].isdigit():
                    current.pop()
                skip = True
            elif set(token) <= set("|&;()"):
                if current:
                    commands.append(current)
                current = []
            elif current or token not in keywords:
                current.append(token)
        if current:
            commands.append(current)
    return commands


def option_value(words, *names):
    """The value of `--name value`, `-n value` or `--name=value` in `words`, or None."""
    for i, w in enumerate(words):
        if w in names and i + 1 < len(words):
            return words[i + 1]
        for n in names:
            if n.startswith("--") and w.startswith(n + "="):
                return w.split("=", 1)[1]
    return None


class BackupScript:
    """What the backup script runs, its words expanded with the CronJob's environment."""

    def __init__(self, script, env):
        self.commands = [[shell_expand(w, env) for w in c] for c in shell_commands(script)]
        self.execs, self.listings, self.local = [], [], []
        for words in self.commands:
            if "kubectl" not in words:
                self.local.append(words)
                continue
            k = words.index("kubectl")
            if words[k + 1:k + 2] == ["exec"] and "--" in words[k:]:
                d = words.index("--", k)
                options = words[k + 2:d]
                pods = [w for i, w in enumerate(options) if not w.startswith("-")
                        and not (i and options[i - 1] in ("-n", "--namespace", "-c", "--container"))]
                self.execs.append({
                    "namespace": option_value(options, "-n", "--namespace"),
                    "container": option_value(options, "-c", "--container"),
                    "pod": pods[0] if pods else None,
                    "argv": words[d + 1:],
                })
            elif words[k + 1:k + 3] == ["get", "pods"]:
                self.listings.append(words[k:])

    def in_pod(self, *argv0):
        return [e for e in self.execs if e["argv"][:len(argv0)] == list(argv0)]

    def backup_argv(self):
        found = self.in_pod("velostream", "state", "backup")
        return found[0]["argv"] if len(found) == 1 else None

    def flags(self):
        """The `velostream state backup` flags, each with its value (None for a switch)."""
        argv, flags, i = self.backup_argv() or [], {}, 3
        while i < len(argv):
            w = argv[i]
            if w.startswith("--") and "=" in w:
                flags[w.split("=", 1)[0]] = w.split("=", 1)[1]
            elif w.startswith("-"):
                takes = i + 1 < len(argv) and not argv[i + 1].startswith("-")
                flags[w] = argv[i + 1] if takes else None
                i += 1 if takes else 0
            i += 1
        return flags


def help_flags(binary, *command):
    result = subprocess.run([str(binary.path), *command, "--help"], capture_output=True, text=True, timeout=60)
    return set(re.findall(r"^\s+(?:-\w,\s+)?(--[a-z][a-z0-9-]*)", result.stdout, re.M)), result.stdout


def selector_labels(selector):
    labels = {}
    for part in (selector or "").split(","):
        if "=" not in part:
            return None
        key, value = part.split("=", 1)
        labels[key.rstrip("=")] = value
    return labels


def check_on(label, pod, secrets_made, path, what, kinds, writable=False, key_in=None):
    """PASS when `path` lies on a volume of the pod of one of `kinds` (writable, holding
    the key as a ConfigMap or the README's Secret has it, when asked)."""
    mount = pod.mount_of(path)
    if not mount:
        return R.check(f"{label} {what} {path} is on a mounted volume", False, "no volume mounted there")
    kind = pod.volume_kind(mount["name"])
    problems = []
    if kind not in kinds:
        problems.append(f"{kind} volume, expected {' or '.join(kinds)}")
    if writable and mount.get("readOnly"):
        problems.append("mounted read-only")
    rel = os.path.relpath(path, mount["mountPath"])
    if key_in == "configMap":
        cm = pod.configmap_of(mount)
        if rel not in (cm or {}).get("data", {}):
            problems.append(f"ConfigMap has no {rel}")
    if key_in == "secret":
        secret = pod.secret_of(mount)
        if rel not in secrets_made.get(secret, set()):
            problems.append(f"the README's Secret {secret} has no key {rel}")
    return R.check(f"{label} {what} {path} is on the {kind} volume {mount['name']} at {mount['mountPath']}",
                   not problems, "; ".join(problems))


def within(path, directory):
    directory = directory.rstrip("/") or "/"
    return path == directory or path.startswith(directory + "/")


class BackupJob:
    """The CronJob of deploy/kubernetes/backup and the pieces of its pod the checks use."""

    def __init__(self, objects):
        self.cronjob = next((o for o in of_kind(objects, "CronJob") if o["metadata"]["name"] == BACKUP_CRONJOB), None)
        if not self.cronjob:
            return
        self.spec = self.cronjob["spec"]
        self.job = dig(self.spec, "jobTemplate", "spec", default={})
        self.template = self.job.get("template", {})
        self.labels = dig(self.template, "metadata", "labels", default={})
        self.pod_spec = self.template.get("spec", {})
        self.container = (self.pod_spec.get("containers") or [{}])[0]
        self.volumes = {v["name"]: v for v in self.pod_spec.get("volumes", [])}
        self.mounts = self.container.get("volumeMounts", [])
        self.configmaps = {c["metadata"]["name"]: c for c in of_kind(objects, "ConfigMap")}
        self.claims = {c["metadata"]["name"]: c for c in of_kind(objects, "PersistentVolumeClaim")}
        namespace = self.cronjob["metadata"].get("namespace")
        self.env = {}
        for e in self.container.get("env", []):
            if "value" in e:
                self.env[e["name"]] = str(e["value"])
            elif dig(e, "valueFrom", "fieldRef", "fieldPath") == "metadata.namespace" and namespace:
                self.env[e["name"]] = namespace

    mount_of = Pod.mount_of

    def script(self):
        """(path, text) of the script the container runs, from the ConfigMap mounted there."""
        for word in list(self.container.get("command", [])) + list(self.container.get("args", [])):
            mount = self.mount_of(word) if word.startswith("/") else None
            name = dig(self.volumes.get(mount["name"], {}), "configMap", "name") if mount else None
            if name:
                key = os.path.relpath(word, mount["mountPath"])
                return word, self.configmaps.get(name, {}).get("data", {}).get(key)
        return None, None

    def claim_at(self, path):
        """The PersistentVolumeClaim mounted (writable) where `path` lies, or None."""
        mount = self.mount_of(path)
        name = dig(self.volumes.get(mount["name"], {}), "persistentVolumeClaim", "claimName") if mount else None
        return (self.claims.get(name), mount) if name else (None, mount)


def backup_rbac(objects, account):
    """The Roles that RoleBindings give `account`, and the bindings."""
    roles = {o["metadata"]["name"]: o for o in of_kind(objects, "Role")}
    bindings = [b for b in of_kind(objects, "RoleBinding")
                if any(x.get("kind") == "ServiceAccount" and x.get("name") == account
                       and x.get("namespace", NAMESPACE) == NAMESPACE for x in b.get("subjects", []))]
    return roles, bindings


def rule_grants(rules):
    grants = set()
    for rule in rules or []:
        if set(rule) - {"apiGroups", "resources", "verbs"}:
            grants.add(("?", ",".join(sorted(set(rule) - {"apiGroups", "resources", "verbs"})), "?"))
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    grants.add((group, resource, verb))
    return grants


def check_backup(objects, pods, settings, binary, secrets_made):
    """The static checks of deploy/kubernetes/backup; returns the plan the other checks
    run (the CronJob, its script, the `state backup` command), or None."""
    label = "[backup]"
    R.section(f"{DEPLOY.relative_to(ROOT)}/{BACKUP_DIRECTORY}")
    wrong_ns = [f"{o['kind']}/{o['metadata']['name']}" for o in objects if o["metadata"].get("namespace") != NAMESPACE]
    R.check(f"{label} every object is in namespace {NAMESPACE}", not wrong_ns, ", ".join(wrong_ns))
    job = BackupJob(objects)
    if not R.check(f"{label} CronJob {BACKUP_CRONJOB}", job.cronjob is not None,
                   ", ".join(o["metadata"]["name"] for o in of_kind(objects, "CronJob"))):
        return None
    spec = job.spec

    # schedule
    schedule = spec.get("schedule")
    gaps = schedule_gaps(schedule)
    R.check(f"{label} schedule {schedule!r} meets the RPO of {BACKUP_RPO_MINUTES} minutes",
            gaps is not None and gaps[1] <= BACKUP_RPO_MINUTES,
            f"at most {gaps[1]} minutes between runs" if gaps else "not a daily minute/hour schedule")
    R.check(f"{label} concurrencyPolicy Forbid (never two runs at once)", spec.get("concurrencyPolicy") == "Forbid",
            f"{spec.get('concurrencyPolicy', 'Allow (the default)')}")
    interval = (gaps[0] if gaps else BACKUP_RPO_MINUTES) * 60
    start, active = spec.get("startingDeadlineSeconds"), job.job.get("activeDeadlineSeconds")
    R.check(f"{label} startingDeadlineSeconds set, under the {interval // 60} minutes between runs",
            isinstance(start, int) and 0 < start < interval, f"{start}")
    R.check(f"{label} activeDeadlineSeconds: a run started as late as startingDeadlineSeconds allows ends "
            f"before the next is due",
            isinstance(active, int) and isinstance(start, int) and 0 < active and start + active <= interval,
            f"{start} + {active} s, {interval} s between runs")
    for key in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        R.check(f"{label} {key} set", isinstance(spec.get(key), int), f"{spec.get(key)}")

    # the account and what it may do
    account = job.pod_spec.get("serviceAccountName")
    R.check(f"{label} the CronJob's pods run as ServiceAccount {BACKUP_ACCOUNT}", account == BACKUP_ACCOUNT, f"{account}")
    accounts = {o["metadata"]["name"] for o in of_kind(objects, "ServiceAccount")}
    R.check(f"{label} ServiceAccount {account} exists", account in accounts, ", ".join(sorted(accounts)))
    R.check(f"{label} the CronJob's pods mount the account's token (kubectl needs it)",
            job.pod_spec.get("automountServiceAccountToken", True) is not False)
    roles, bindings = backup_rbac(objects, account)
    bound = [roles.get(b["roleRef"]["name"]) for b in bindings if b["roleRef"].get("kind") == "Role"]
    R.check(f"{label} a RoleBinding binds {account} to a Role of the namespace, and only that",
            len(bindings) == 1 and len(bound) == 1 and bound[0] is not None
            and bindings[0]["roleRef"].get("apiGroup") == "rbac.authorization.k8s.io",
            "; ".join(f"{b['metadata']['name']} -> {b['roleRef'].get('kind')}/{b['roleRef'].get('name')}" for b in bindings)
            or "none")
    grants = rule_grants(bound[0].get("rules")) if len(bound) == 1 and bound[0] else set()
    R.check(f"{label} the Role grants exactly get and list on pods and create on pods/exec",
            grants == BACKUP_GRANTS,
            f"extra: {sorted(grants - BACKUP_GRANTS)}; missing: {sorted(BACKUP_GRANTS - grants)}"
            if grants != BACKUP_GRANTS else f"Role {bound[0]['metadata']['name']}")

    # the container
    c = job.container
    psc, csc = job.pod_spec.get("securityContext", {}), c.get("securityContext", {})
    R.check(f"{label} runs as non-root (runAsNonRoot, a non-zero runAsUser)",
            psc.get("runAsNonRoot") is True and (csc.get("runAsUser", psc.get("runAsUser")) or 0) > 0,
            json.dumps(psc))
    R.check(f"{label} read-only root file system, no privilege escalation, no capabilities",
            csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False
            and dig(csc, "capabilities", "drop") == ["ALL"], json.dumps(csc))
    resources = c.get("resources", {})
    R.check(f"{label} resources: requests and limits of cpu and memory",
            all(dig(resources, kind, r) for kind in ("requests", "limits") for r in ("cpu", "memory")),
            json.dumps(resources))
    kustomization = yaml.safe_load((DEPLOY / BACKUP_DIRECTORY / "kustomization.yaml").read_text()) or {}
    raw_images = [dig(d, "spec", "jobTemplate", "spec", "template", "spec", "containers", default=[{}])[0].get("image")
                  for f in kustomization.get("resources", [])
                  for d in yaml.safe_load_all((DEPLOY / BACKUP_DIRECTORY / f).read_text()) if d and d.get("kind") == "CronJob"]
    entries = {i.get("name"): i for i in kustomization.get("images", [])}
    entry = entries.get(raw_images[0]) if len(raw_images) == 1 else None
    expected = f"{entry.get('newName', entry['name'])}:{entry['newTag']}" if entry and entry.get("newTag") else None
    R.check(f"{label} the image is set by the images: entry {raw_images[0] if raw_images else '?'} of "
            f"{BACKUP_DIRECTORY}/kustomization.yaml", bool(entry) and c.get("image") == expected,
            f"rendered {c.get('image')}")
    if csc.get("readOnlyRootFilesystem"):
        for name in ("HOME", "TMPDIR"):
            path = job.env.get(name)
            mount = job.mount_of(path) if path else None
            R.check(f"{label} {name} {path} is writable under the read-only root",
                    bool(mount) and not mount.get("readOnly"), "no volume mounted there" if not mount else "")
    R.check(f"{label} the CronJob's pods are not selected as Velostream pods (labels {json.dumps(job.labels)})",
            job.labels.get("app") != "velostream")

    # the script
    path, script = job.script()
    R.check(f"{label} the container runs a script from a mounted ConfigMap", script is not None, f"{path}")
    if script is None:
        return None
    source = DEPLOY / BACKUP_DIRECTORY / os.path.basename(path)
    R.check(f"{label} the script is {BACKUP_DIRECTORY}/{source.name}", source.exists() and source.read_text() == script)
    syntax = subprocess.run(["sh", "-n", str(source)], capture_output=True, text=True)
    R.check(f"{label} sh -n {BACKUP_DIRECTORY}/{source.name} (the script parses)", syntax.returncode == 0,
            syntax.stderr.strip()[:200])
    unset = sorted(set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?\}", script)) - set(job.env))
    R.check(f"{label} every variable the script requires is set by the CronJob", not unset, ", ".join(unset))
    parsed = BackupScript(script, job.env)
    argv = parsed.backup_argv()
    if not R.check(f"{label} the script runs `velostream state backup` in the pods (kubectl exec) once",
                   argv is not None, f"{len(parsed.in_pod('velostream', 'state', 'backup'))} found"):
        return None
    flags = parsed.flags()
    known, help_text = help_flags(binary, "state", "backup")
    unknown = sorted(set(flags) - known)
    R.check(f"{label} every flag of its `velostream state backup` is one of `state backup --help`",
            bool(known) and not unknown, f"unknown: {', '.join(unknown)}" if unknown else " ".join(sorted(flags)))
    R.check(f"{label} the token is not on the command line (other users see it; --token reads VELOSTREAM_TOKEN)",
            "--token" not in flags and re.search(r"--token\b.*\[env: VELOSTREAM_TOKEN\]", help_text) is not None)
    containers = sorted({str(e["container"]) for e in parsed.execs})
    namespaces = sorted({str(e["namespace"]) for e in parsed.execs})
    R.check(f"{label} every kubectl exec names the namespace {NAMESPACE}", namespaces == [NAMESPACE], ", ".join(namespaces))
    listing = parsed.listings[0] if len(parsed.listings) == 1 else []
    R.check(f"{label} the script lists the pods once, the running ones (kubectl get pods)",
            len(parsed.listings) == 1 and option_value(listing, "--field-selector") == "status.phase=Running"
            and option_value(listing, "-n", "--namespace") == NAMESPACE,
            f"{len(parsed.listings)} listing(s)")
    unexpanded = BackupScript(script, {}).listings
    raw_selector = option_value(unexpanded[0], "-l", "--selector") if len(unexpanded) == 1 else None
    colour_default = job.env.get("VELOSTREAM_COLOUR")
    R.check(f"{label} VELOSTREAM_COLOUR is empty (every colour) or a colour",
            colour_default in ("", *COLOURS), f"{colour_default!r}")

    # the pods: selector, container, paths, for each rendering of the StatefulSet
    for name, pod in pods.items():
        s = settings.get(name)
        if not (pod.statefulset and s):
            continue
        tag = f"[backup/{name}]"
        colour = name if name in COLOURS else ""
        env = dict(job.env, VELOSTREAM_COLOUR=colour)
        selector = selector_labels(shell_expand(raw_selector, env)) if raw_selector else None
        R.check(f"{tag} the script's selector {json.dumps(selector)} (VELOSTREAM_COLOUR={colour!r}) selects "
                f"the StatefulSet's pods", selects(selector, pod.labels), json.dumps(pod.labels))
        for other in COLOURS:
            if colour and other != colour and other in pods and pods[other].statefulset:
                R.check(f"{tag} ... and not the pods of {other}", not selects(selector, pods[other].labels))
        R.check(f"{tag} ... nor the backup Job's own pods", not selects(selector or {}, job.labels) if selector else False)
        R.check(f"{tag} kubectl exec runs in the container {pod.container.get('name')}",
                containers == [pod.container.get("name")], ", ".join(containers))
        plan = BackupScript(script, env)
        backup_flags = plan.flags()
        url = urllib.parse.urlsplit(backup_flags.get("--service") or "")
        scheme = "https" if s.tls_enabled else "http"
        R.check(f"{tag} --service {url.geturl()} is the pod's own API ({scheme}, health_check_port {s.health_port})",
                url.scheme == scheme and url.port == s.health_port and url.hostname in ("localhost", "127.0.0.1"))
        if s.tls_enabled and s.client_auth == "required":
            R.check(f"{tag} --cacert, --cert and --key given (security.tls.client_auth: required)",
                    all(backup_flags.get(f) for f in ("--cacert", "--cert", "--key")))
        for flag in ("--cacert", "--cert", "--key"):
            if backup_flags.get(flag):
                check_on(tag, pod, secrets_made, backup_flags[flag], f"{flag}", ["secret"], key_in="secret")
        if s.auth_mode == "token":
            R.check(f"{tag} the pods set VELOSTREAM_TOKEN, the token of --service (security.auth.mode: token)",
                    "VELOSTREAM_TOKEN" in pod.env())
        state_dir = backup_flags.get("--state-dir")
        R.check(f"{tag} --state-dir {state_dir} is the configuration's state_dir {s.state_dir}",
                state_dir == s.state_dir)
        if state_dir:
            check_on(tag, pod, secrets_made, state_dir, "--state-dir", ["volumeClaimTemplate"], writable=True)
        to = backup_flags.get("--to") or ""
        state_mount = pod.mount_of(s.state_dir)
        check_on(tag, pod, secrets_made, to, "--to (the staging directory)", ["volumeClaimTemplate"], writable=True)
        R.check(f"{tag} --to is on the state volume, beside the state directory, not in it",
                bool(to) and pod.mount_of(to) is state_mount and not within(to, s.state_dir), to)
        streamed = [option_value(e["argv"], "-C") for e in plan.in_pod("tar") if "-cf" in e["argv"]]
        R.check(f"{tag} the script streams out the directory --to names (tar -C ... -cf)", streamed == [to],
                ", ".join(map(str, streamed)))
        removed = [w for e in plan.in_pod("rm") for w in e["argv"][1:] if not w.startswith("-")]
        unsafe = [r for r in removed if not within(to, r) or within(s.state_dir, r)
                  or r.rstrip("/") == (state_mount or {}).get("mountPath", "").rstrip("/")]
        R.check(f"{tag} the script removes in the pod only the staging directory (never the state "
                f"directory or the volume)", bool(removed) and not unsafe, ", ".join(unsafe or removed))
        paths = sorted({w for e in plan.execs for w in e["argv"] if w.startswith("/")})
        outside = [p for p in paths if not pod.mount_of(p)]
        R.check(f"{tag} every path the script passes into the pod lies on a volume the StatefulSet mounts",
                not outside, ", ".join(outside) if outside else ", ".join(paths))

    # where the backups go
    extracted = [option_value(words, "-C") for words in parsed.local if words[:1] == ["tar"] and "-xf" in words]
    target = extracted[0] if len(extracted) == 1 else None
    claim, mount = job.claim_at(target) if target else (None, None)
    R.check(f"{label} the script extracts the backups into BACKUP_DIR {job.env.get('BACKUP_DIR')} (tar -C ... -xf)",
            bool(target) and within(target, job.env.get("BACKUP_DIR", "")), f"{target}")
    R.check(f"{label} the backup claim is mounted, writable, where the script writes",
            bool(claim) and not mount.get("readOnly") and within(job.env.get("BACKUP_DIR", "/"), mount["mountPath"]),
            f"{mount['name']} at {mount['mountPath']}" if mount else "no claim mounted there")
    templates = {t for p in pods.values() if p.statefulset for t in p.claims}
    R.check(f"{label} the backups are on a claim of their own, not a pod's state volume",
            bool(claim) and not any(claim["metadata"]["name"].startswith(t + "-") for t in templates),
            claim["metadata"]["name"] if claim else "")
    R.check(f"{label} RETENTION_DAYS is the guide's {BACKUP_RETENTION_DAYS} days",
            job.env.get("RETENTION_DAYS") == str(BACKUP_RETENTION_DAYS), f"{job.env.get('RETENTION_DAYS')}")
    return {"job": job, "script": script, "argv": argv, "container": containers[0] if len(containers) == 1 else None}


FAKE_KUBECTL = r'''
"""A stand-in for kubectl, for the backup script: `get pods` and `exec` on the pods of
a JSON file (CHECK_FAKE_KUBE), each a directory standing for its volumes."""
import json, os, subprocess, sys

conf = json.load(open(os.environ["CHECK_FAKE_KUBE"]))
args = sys.argv[1:]
with open(conf["log"], "a") as log:
    log.write(json.dumps(args) + "\n")


def option(words, *names):
    for i, w in enumerate(words):
        if w in names and i + 1 < len(words):
            return words[i + 1]
        for n in names:
            if w.startswith(n + "="):
                return w.split("=", 1)[1]
    return None


def fail(message):
    sys.stderr.write(message + "\n")
    sys.exit(1)


if args[:2] == ["get", "pods"]:
    if option(args, "-n", "--namespace") != conf["namespace"]:
        fail("error: the namespace is not " + conf["namespace"])
    wanted = dict(p.split("=", 1) for p in (option(args, "-l", "--selector") or "").split(",") if p)
    phase = option(args, "--field-selector")
    output = option(args, "-o", "--output")
    names = [n for n, p in sorted(conf["pods"].items())
             if all(p["labels"].get(k) == v for k, v in wanted.items())
             and (phase is None or phase == "status.phase=" + p["phase"])]
    if output == 'jsonpath={range .items[*]}{.metadata.name}{"\\n"}{end}':
        sys.stdout.write("".join(n + "\n" for n in names))
    elif output == "name":
        sys.stdout.write("".join("pod/" + n + "\n" for n in names))
    else:
        fail("error: output format not supported here: %r" % output)
elif args[:1] == ["exec"]:
    end = args.index("--")
    options, argv = args[1:end], args[end + 1:]
    names = [w for i, w in enumerate(options) if not w.startswith("-")
             and not (i and options[i - 1] in ("-n", "--namespace", "-c", "--container"))]
    pod = conf["pods"].get(names[0] if names else "")
    if option(options, "-n", "--namespace") != conf["namespace"] or not pod or pod["phase"] != "Running":
        fail("Error from server (NotFound): pods not found")
    if option(options, "-c", "--container") != conf["container"]:
        fail("Error from server (BadRequest): container not found")
    argv = [pod["root"] + a if a.startswith("/") else a for a in argv]
    if argv[0] == "velostream":
        if pod.get("fail"):
            fail("Error: POST https://localhost:8080/checkpoint: 503 Service Unavailable (stand-in failure)")
        # the hold (--service) is checked against the started binary
        i = argv.index("--service") if "--service" in argv else -1
        if i >= 0:
            del argv[i:i + 2]
        argv[0] = conf["binary"]
    sys.exit(subprocess.run(argv, env=dict(pod["env"], PATH=os.environ["PATH"])).returncode)
else:
    fail("not supported here: kubectl " + " ".join(args))
'''


def run_backup_script(plan, pods, settings, binary):
    """backup.sh against stand-in pods: a stand-in kubectl runs each pod's commands in a
    directory of its own, the real binary's `state backup` included."""
    R.section("the backup script, run against stand-in pods")
    job = plan["job"]
    colours = [c for c in COLOURS if c in pods and pods[c].statefulset and settings.get(c)]
    if len(colours) != len(COLOURS):
        R.check("both colours render, for the stand-in pods", False)
        return
    work = Path(tempfile.mkdtemp(prefix="velostream-backup-script-"))
    ok = False
    try:
        bin_dir = work / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "kubectl"
        fake.write_text(f"#!{sys.executable}\n{FAKE_KUBECTL}")
        fake.chmod(0o755)
        mapping = {m["mountPath"].rstrip("/"): work / "job" / m["mountPath"].strip("/") for m in job.mounts}
        for directory in mapping.values():
            directory.mkdir(parents=True, exist_ok=True)
        env = {k: map_path(v, mapping) if v.startswith("/") else v for k, v in job.env.items()}
        env["PATH"] = f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        backups = Path(env["BACKUP_DIR"])
        staging = job.env["STAGING_DIR"]
        names = {c: pods[c].statefulset["metadata"]["name"] for c in colours}
        stand_in = {
            f"{names['blue']}-0": ("blue", "Running", False),
            f"{names['blue']}-1": ("blue", "Running", True),
            f"{names['green']}-0": ("green", "Running", False),
            f"{names['green']}-2": ("green", "Pending", False),
        }
        conf = {"namespace": NAMESPACE, "container": plan["container"], "binary": str(binary.path),
                "log": str(work / "kubectl.log"), "pods": {
                    "gateway-0": {"labels": {"app": "gateway"}, "phase": "Running", "root": str(work / "gateway-0"),
                                  "env": {}}}}
        for pod_name, (colour, phase, failing) in stand_in.items():
            root = work / "pods" / pod_name
            state = Path(str(root) + settings[colour].state_dir)
            (state / "applications").mkdir(parents=True)
            (state / "applications" / "marker.sql").write_text(f"-- {pod_name}\n")
            (Path(str(root) + staging) / "20000101T000000Z").mkdir(parents=True)  # left by an interrupted run
            conf["pods"][pod_name] = {"labels": pods[colour].labels, "phase": phase, "root": str(root),
                                      "fail": failing, "env": pods[colour].env()}
        (work / "kubectl.json").write_text(json.dumps(conf))
        env["CHECK_FAKE_KUBE"] = str(work / "kubectl.json")
        script = work / "backup.sh"
        script.write_text(plan["script"])

        # what earlier runs left on the backup claim
        days = int(job.env.get("RETENTION_DAYS", BACKUP_RETENTION_DAYS))
        aged = time.time() - (days + 1) * 86400
        blue0, blue1, green0 = f"{names['blue']}-0", f"{names['blue']}-1", f"{names['green']}-0"
        old = {backups / blue0 / "20000101T000000Z": aged, backups / blue0 / "20000102T000000Z.partial": time.time(),
               backups / "velostream-gone-0" / "20000101T000000Z": aged,
               backups / green0 / "20000103T000000Z": time.time() - 86400,
               backups / "lost+found" / "20000101T000000Z": aged}
        for directory, mtime in old.items():
            directory.mkdir(parents=True)
            os.utime(directory, (mtime, mtime))

        def run(colour):
            result = subprocess.run(["sh", str(script)], env=dict(env, VELOSTREAM_COLOUR=colour), cwd=work,
                                    capture_output=True, text=True, timeout=300)
            lines = result.stdout.strip().splitlines()
            return result, lines, {p: [line for line in lines if re.search(rf"\b{re.escape(p)}\b", line)]
                                   for p in conf["pods"]}

        result, lines, by_pod = run("")
        print("     " + "\n     ".join(lines))
        one_line = all(len(by_pod[p]) == 1 for p in (blue0, blue1, green0))
        R.check("[backup] with one pod's backup failing, every running pod is tried, one line each, and the "
                "script exits non-zero",
                result.returncode != 0 and one_line and by_pod[blue1][0].startswith("FAILED")
                and by_pod[blue0][0].startswith("OK") and by_pod[green0][0].startswith("OK"),
                f"exit {result.returncode}; {result.stderr.strip()[-200:]}")
        R.check("[backup] pods the selector leaves out (another app, a pod not Running) are not backed up",
                not by_pod["gateway-0"] and not by_pod[f"{names['green']}-2"])
        stamps = {}
        for p in (blue0, green0):
            m = re.search(rf"{re.escape(str(backups))}/{re.escape(p)}/(\d{{8}}T\d{{6}}Z)\b", by_pod[p][0] if by_pod[p] else "")
            stamps[p] = m.group(1) if m else None
        copied = all(stamps[p] and (backups / p / stamps[p] / "applications" / "marker.sql").read_text() == f"-- {p}\n"
                     for p in stamps)
        R.check(f"[backup] each backup lands in BACKUP_DIR/<pod>/<UTC stamp>/ with the state's content",
                copied, json.dumps(stamps))
        left = [p for p in (blue0, blue1, green0) if Path(str(work / "pods" / p) + staging).exists()]
        R.check(f"[backup] the staging directory {staging} is removed from every pod, also after a failure",
                not left, ", ".join(left))
        R.check("[backup] the failed pod leaves no backup and no partial copy",
                not list((backups / blue1).glob("*")) if (backups / blue1).exists() else True)
        R.check(f"[backup] backups older than {days} days and interrupted copies are removed, the newest of "
                f"each pod kept",
                not (backups / blue0 / "20000101T000000Z").exists()
                and not (backups / blue0 / "20000102T000000Z.partial").exists()
                and (backups / "velostream-gone-0" / "20000101T000000Z").exists()
                and (backups / green0 / "20000103T000000Z").exists()
                and (backups / "lost+found" / "20000101T000000Z").exists())

        time.sleep(max(0.0, 1.05 - (time.time() % 1)))  # a new UTC stamp
        result, lines, by_pod = run("green")
        print("     " + "\n     ".join(lines))
        R.check("[backup] with VELOSTREAM_COLOUR=green only green's running pods, and exit 0 when all succeed",
                result.returncode == 0 and len(by_pod[green0]) == 1 and by_pod[green0][0].startswith("OK")
                and not by_pod[blue0] and not by_pod[blue1],
                f"exit {result.returncode}; {result.stderr.strip()[-200:]}")
        ok = not R.failed
    finally:
        if ok:
            shutil.rmtree(work, ignore_errors=True)


def backup_against_service(name, pod, plan, mapping, by_number, certs, env, secrets_made, binary, probe):
    """The CronJob's `velostream state backup`, run as kubectl exec would run it in the
    pod (its environment, the volumes' temporary directories), against the started service."""
    words = [re.sub(r"\$\{[^}]*\}", "check", w) for w in plan["argv"][3:]]
    flags = dict(zip(words, words[1:]))
    for flag, made in (("--cert", "client.crt"), ("--key", "client.key")):
        path = flags.get(flag)
        mount = pod.mount_of(path) if path else None
        secret = pod.secret_of(mount) if mount else None
        if secret and os.path.basename(path) in secrets_made.get(secret, set()):
            shutil.copy(certs[made], map_path(path, mapping))
    args = []
    for i, w in enumerate(words):
        if i and words[i - 1] == "--service":
            url = urllib.parse.urlsplit(w)
            w = url._replace(netloc=f"{url.hostname}:{by_number.get(url.port, url.port)}").geturl()
        elif w.startswith("/"):
            w = map_path(w, mapping)
        args.append(w)
    to = Path(args[args.index("--to") + 1]) if "--to" in args else None
    result = subprocess.run([str(binary.path), "state", "backup", *args], env=env, capture_output=True, text=True,
                            timeout=120)
    R.check(f"[{name}] the backup CronJob's `velostream state backup` (its flags, the pod's VELOSTREAM_TOKEN, "
            f"a client certificate of ca.crt as {os.path.basename(flags.get('--cert', '?'))}) holds the service "
            f"and writes the backup", result.returncode == 0 and bool(to) and to.is_dir(),
            (result.stderr.strip().splitlines() or [""])[-1][:300])
    status, body = probe("readinessProbe")
    R.check(f"[{name}] the service is ready again after the backup (POST /resume)", status == 200, f"{status} {body[:120]}")
    if result.returncode != 0 or not to or not to.is_dir():
        return
    # out of the pod as the script copies it, and back as docs/operations.md restores it
    claim, restored = Path(tempfile.mkdtemp(prefix="claim-", dir=to.parent)), Path(tempfile.mkdtemp(dir=to.parent))
    copied = subprocess.run(f"tar -C '{to}' -cf - . | tar -C '{claim}' -xf -", shell=True, capture_output=True, text=True)
    restore = subprocess.run([str(binary.path), "state", "restore", "--from", str(claim), "--state-dir",
                              str(restored / "state")], env=env, capture_output=True, text=True, timeout=120)
    R.check(f"[{name}] the backup, copied out with tar, restores (velostream state restore --from ... --state-dir ...)",
            copied.returncode == 0 and restore.returncode == 0 and "restored up to checkpoint" in restore.stderr,
            (copied.stderr + restore.stderr).strip().replace("\n", "; ")[:300])


# ---------------------------------------------------------------- the binary, started


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def request(port, path, https=False, verify=None, cert=None, token=None):
    """(status, body) of a GET, or (None, error)."""
    try:
        if https:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if verify:
                ctx.load_verify_locations(str(verify))
            else:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if cert:
                ctx.load_cert_chain(str(cert[0]), str(cert[1]))
            conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=5)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    except (OSError, ssl.SSLError, http.client.HTTPException) as e:
        return None, f"{type(e).__name__}: {e}"


def remap(value, mapping):
    """Paths under a mount point moved to its temporary directory."""
    if isinstance(value, dict):
        return {k: remap(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [remap(v, mapping) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return map_path(value, mapping)
    return value


def map_path(path, mapping):
    """`path` inside the temporary directory of its mount point; a path on no
    mounted volume goes under the "" entry (the pod would lose or lack it, and
    the static checks fail it), so a local start never touches the host's own."""
    for mp in sorted(mapping, key=len, reverse=True):
        if mp and (path == mp or path.startswith(mp + "/")):
            return str(mapping[mp]) + path[len(mp):]
    return str(mapping[""]) + path if "" in mapping else path


def local_config(text, mapping, last, ports, state_dir, application):
    """One document rewritten for a local start: paths in the temporary volumes,
    loopback and free ports, no Kafka cluster or regions, syslog to loopback,
    and (in the last document) the state directory and a local application."""
    doc = yaml.safe_load(text) or {}
    doc = remap(doc, mapping)
    kafka = dig(doc, "velostream", "kafka")
    if isinstance(kafka, dict):
        kafka.pop("bootstrap_servers", None)
        kafka.pop("bootstrap.servers", None)
    doc.pop("regions", None)
    for output in dig(doc, "logging", "outputs", default=[]) or []:
        if isinstance(output, dict) and output.get("type") == "syslog":
            output["host"] = "127.0.0.1"
    if last:
        v = doc.setdefault("velostream", {})
        mon = v.setdefault("monitoring", {})
        mon["bind_address"] = "127.0.0.1"
        mon["health_check_port"], mon["metrics_port"] = ports["health"], ports["metrics"]
        if ports.get("probe"):
            mon["probe_port"] = ports["probe"]
        v["state_dir"] = str(state_dir)
        v["applications"] = [str(application)]
    return yaml.safe_dump(doc, sort_keys=False)


def start_binary(name, pod, s, binary, secrets_made, backup=None):
    R.section(f"[{name}] the binary, started as the pod would start it")
    work = Path(tempfile.mkdtemp(prefix=f"velostream-manifests-{name}-"))
    process = None
    try:
        mapping = {m["mountPath"].rstrip("/"): work / "mnt" / m["mountPath"].strip("/") for m in pod.mounts}
        mapping[""] = work / "unmounted"
        for m in pod.mounts:
            (work / "mnt" / m["mountPath"].strip("/")).mkdir(parents=True, exist_ok=True)
        certs = make_certificates(Path(tempfile.mkdtemp(dir=work, prefix="pki-")), ca_name="check-ca")
        token = secrets.token_hex(32)
        # the Secrets, as the README creates them
        secret_files = {
            "velostream-tls": {os.path.basename(s.tls_files.get(k, "")): certs[f] for k, f in
                               (("cert_file", "server.crt"), ("key_file", "server.key"), ("ca_file", "ca.crt"))},
            "velostream-api-tokens": {
                os.path.basename(s.tokens_file or "tokens.yaml"):
                    yaml.safe_dump([{"name": "check-operator", "role": "operator",
                                     "sha256": hashlib.sha256(token.encode()).hexdigest()}])},
        }
        ports = dict(zip(("health", "metrics", "probe"), free_ports(3)))
        if s.probe_port is None:
            ports.pop("probe")
        by_number = {s.health_port: ports["health"], s.metrics_port: ports["metrics"]}
        if s.probe_port is not None:
            by_number[s.probe_port] = ports["probe"]
        app_dir = work / "local-app"
        app_dir.mkdir()
        (app_dir / "in.jsonl").write_text("".join(json.dumps({"id": i, "v": f"v{i}"}) + "\n" for i in range(5)))
        application = app_dir / "local.sql"
        application.write_text(
            "CREATE STREAM events (id BIGINT, v VARCHAR)\n"
            "WITH ('events.type' = 'file_source', 'events.path' = 'in.jsonl', 'events.format' = 'jsonl');\n\n"
            "CREATE STREAM copied AS SELECT id, v FROM events\n"
            "WITH ('copied.type' = 'file_sink', 'copied.path' = 'out.jsonl');\n")
        files, _ = pod.config_files()
        for m in pod.mounts:
            target = mapping[m["mountPath"].rstrip("/")]
            cm = pod.configmap_of(m)
            if cm:
                for key, text in cm.get("data", {}).items():
                    path = m["mountPath"].rstrip("/") + "/" + key
                    if path in files:
                        text = local_config(text, mapping, path == files[-1], ports,
                                            map_path(s.state_dir, mapping), application)
                    (target / key).write_text(text)
            secret = pod.secret_of(m)
            for key, content in secret_files.get(secret, {}).items():
                if isinstance(content, Path):
                    shutil.copy(content, target / key)
                else:
                    (target / key).write_text(content)
        values = {("velostream-secrets", "api-token"): token}
        env = pod.env(lambda secret, key: values.get((secret, key), f"check-{key}"))
        # the environment's clusters and database are not there either
        env.pop("KAFKA_BROKERS", None)
        env.pop("DB_HOST", None)
        env.update({"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work)})
        args = [map_path(a, mapping) if a.startswith("/") else a for a in pod.container.get("args", [])]
        log = open(work / "service.log", "w")
        process = subprocess.Popen([str(binary.path), *args], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        print(f"     started {binary.path} {' '.join(pod.container.get('args', []))}")
        print(f"     (mounts under {work / 'mnt'}; ports {by_number} -> {ports}; log {work / 'service.log'})")

        def tail():
            log.flush()
            return " | ".join((work / "service.log").read_text(errors="replace").strip().splitlines()[-6:])

        def probe(kind):
            get = pod.container[kind]["httpGet"]
            port = by_number.get(pod.port(get["port"]))
            return request(port, get["path"], https=get.get("scheme", "HTTP").upper() == "HTTPS")

        deadline = time.time() + START_TIMEOUT
        live = ready = (None, "")
        while time.time() < deadline and process.poll() is None:
            live = probe("livenessProbe")
            if live[0] == 200:
                ready = probe("readinessProbe")
                if ready[0] == 200:
                    break
            time.sleep(0.5)
        exited = process.poll()
        R.check(f"[{name}] the binary accepts the container's arguments and environment and keeps running",
                exited is None, f"exited with status {exited}: {tail()}" if exited is not None else "")
        lp, rp = pod.container["livenessProbe"]["httpGet"], pod.container["readinessProbe"]["httpGet"]
        R.check(f"[{name}] livenessProbe {lp.get('scheme', 'HTTP')} {lp['path']} on {lp['port']} answers 200",
                live[0] == 200, f"{live[0]} {live[1][:200]}")
        R.check(f"[{name}] readinessProbe {rp.get('scheme', 'HTTP')} {rp['path']} on {rp['port']} answers 200",
                ready[0] == 200, f"{ready[0]} {ready[1][:200]}")
        if exited is not None:
            return
        https = s.tls_enabled
        client = (certs["client.crt"], certs["client.key"]) if https else None
        status, body = request(ports["metrics"], "/metrics", https=https, verify=certs["ca.crt"] if https else None, cert=client)
        R.check(f"[{name}] /metrics on metrics_port ({'TLS, client certificate' if https else 'HTTP'}) answers 200",
                status == 200, f"{status} {body[:120] if status != 200 else ''}")
        if s.probe_port is not None:
            status, body = request(ports["probe"], "/metrics")
            R.check(f"[{name}] /metrics on probe_port (plain HTTP, for Prometheus without a certificate) answers 200",
                    status == 200, f"{status}")
        if https and s.client_auth == "required":
            status, body = request(ports["health"], "/health", https=True)
            R.check(f"[{name}] health_check_port refuses a client without a certificate (tls-config.yaml)",
                    status is None, f"{status} {body[:120]}")
        status, body = request(ports["health"], "/jobs", https=https, verify=certs["ca.crt"] if https else None,
                               cert=client, token=env.get("VELOSTREAM_TOKEN"))
        R.check(f"[{name}] GET /jobs with the VELOSTREAM_TOKEN of the Secret answers 200", status == 200,
                f"{status} {body[:160]}")
        if s.auth_mode == "token":
            status, body = request(ports["health"], "/jobs", https=https, verify=certs["ca.crt"] if https else None,
                                   cert=client)
            R.check(f"[{name}] GET /jobs without a token answers 401 (security.auth.mode: token)", status == 401,
                    f"{status}")
        if backup:
            backup_against_service(name, pod, backup, mapping, by_number, certs, env, secrets_made, binary, probe)
        state = Path(map_path(s.state_dir, mapping))
        R.check(f"[{name}] the state directory {s.state_dir} is written on the state volume",
                bool(pod.mount_of(s.state_dir)) and state.is_dir() and any(state.iterdir()), f"{sorted(p.name for p in state.iterdir()) if state.is_dir() else 'absent'}")
        for path in s.log_files:
            local = Path(map_path(path, mapping))
            R.check(f"[{name}] the log file {path} is written on its volume",
                    bool(pod.mount_of(path)) and local.is_file() and local.stat().st_size > 0)
        process.send_signal(signal.SIGTERM)
        grace = pod.spec.get("terminationGracePeriodSeconds", 30)
        try:
            code = process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            code = None
        R.check(f"[{name}] SIGTERM drains and exits 0 within terminationGracePeriodSeconds ({grace}s)", code == 0,
                f"exit status {code}" + (f": {tail()}" if code else ""))
    finally:
        if process and process.poll() is None:
            process.kill()
            process.wait()
        if not R.failed:
            shutil.rmtree(work, ignore_errors=True)


def plan_applications(pod, s, binary):
    """`velostream explain` of each configured application: the SQL parses and plans,
    with its connectors. (`velostream validate` would also build the Kafka client
    settings, but it reads neither KAFKA_BROKERS nor a configuration file, so an
    application that leaves bootstrap.servers to the deployment cannot pass it.)"""
    for path in s.applications:
        mount = pod.mount_of(path)
        cm = pod.configmap_of(mount) if mount else None
        if not cm:
            continue
        with tempfile.TemporaryDirectory(prefix="velostream-app-") as d:
            local = Path(d, os.path.basename(path))
            local.write_text(cm["data"][os.path.relpath(path, mount["mountPath"])])
            result = subprocess.run([str(binary.path), "explain", str(local)], capture_output=True, text=True,
                                    env={"PATH": os.environ.get("PATH", "")}, timeout=120)
            jobs = re.findall(r"^job (\S+)", result.stdout, re.M)
            detail = ", ".join(f"job {j}" for j in jobs) if result.returncode == 0 else result.stderr.strip()[:300]
            R.check(f"application {os.path.basename(path)} plans (velostream explain)",
                    result.returncode == 0 and bool(jobs), detail)


# ---------------------------------------------------------------- main


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print(f"usage: {sys.argv[0]} PATH/TO/velostream", file=sys.stderr)
        return 2
    binary = Path(sys.argv[1])
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        print(f"FAIL binary: {binary} is not an executable file (build it first)")
        return 2
    if not shutil.which("kubectl"):
        print("FAIL kubectl: not on PATH; `kubectl kustomize` renders the manifests "
              "(install it, e.g. apt-get install -y kubernetes-client)")
        return 2
    if not shutil.which("openssl"):
        print("FAIL openssl: not on PATH; it makes the test certificates for the guide's TLS")
        return 2
    version = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True).stdout.strip()
    print(f"kubectl: {version.splitlines()[0] if version else 'unknown version'}")
    print(f"binary: {binary}")

    defaults = source_defaults()
    R.section("what the sources say")
    R.check("defaults found in the sources", all(defaults.values()), json.dumps(defaults))
    env_names = environment_names_in_sources()
    R.check("environment variables the binary reads", bool(env_names), ", ".join(sorted(env_names)))
    bin_ = Binary(binary)
    missing = sorted(n for n in env_names if not bin_.contains(n))
    R.check("each of them is in the binary", not missing, ", ".join(missing))
    documented = " ".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    undocumented = sorted(n for n in env_names if f"`{n}`" not in documented)
    R.check("each of them is documented (README.md, docs/)", not undocumented, ", ".join(undocumented))
    secrets_made = readme_secrets()
    R.check("the README creates the Secrets", bool(secrets_made),
            "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in sorted(secrets_made.items())))

    check_guide_copies()
    rendered, pods, settings = {}, {}, {}
    for name, directory in RENDERINGS.items():
        objects, error = render(directory)
        if not R.check(f"kubectl kustomize {directory}", objects is not None, error):
            continue
        rendered[name] = objects
        if name == "active":
            continue
        pods[name] = Pod(objects)
        settings[name] = check_rendering(name, objects, pods[name], defaults, env_names, bin_, secrets_made)
    check_colours(rendered, pods, settings)
    backup = None
    objects, error = render(BACKUP_DIRECTORY)
    if R.check(f"kubectl kustomize {BACKUP_DIRECTORY}", objects is not None, error):
        backup = check_backup(objects, pods, settings, bin_, secrets_made)
    if backup:
        run_backup_script(backup, pods, settings, bin_)

    R.section("the applications")
    if settings.get("base"):
        plan_applications(pods["base"], settings["base"], bin_)
    for name in ("base", "blue", "green"):
        if settings.get(name):
            start_binary(name, pods[name], settings[name], bin_, secrets_made, backup)

    print(f"\n{R.passed} passed, {len(R.failed)} failed")
    for name in R.failed:
        print(f"  failed: {name}")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
