#!/usr/bin/env python3
"""Checks the Kubernetes manifests of deploy/kubernetes against a built binary.

    scripts/check_manifests.py /var/tmp/velostream-target/debug/velostream

Renders deploy/kubernetes/base, overlays/blue, overlays/green and active with
`kubectl kustomize`, and checks what the rendered objects say against what
the binary and its sources say:

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
- the overlays differ in name, environment label and consumer group, and
  velostream-active selects one of them;
- the binary, started with the container's arguments and environment
  (each mounted volume a temporary directory, the configuration rewritten
  to loopback, free ports, no Kafka cluster, no database and a local file
  application), answers the probes as the kubelet sends them with 200,
  serves the API and the metrics as configured, writes its state and logs
  where the volumes are, and drains on SIGTERM.

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
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
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
    R.check("transactional ids per colour: none in use (at_least_once)",
            all(settings.get(c) and settings[c].guarantee != "exactly_once" for c in COLOURS),
            "a kafka_sink's transactional.id is its 'transactional.id' property or velostream-<statement>; no configuration key or variable sets it")
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


def start_binary(name, pod, s, binary, secrets_made):
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

    R.section("the applications")
    if settings.get("base"):
        plan_applications(pods["base"], settings["base"], bin_)
    for name in ("base", "blue", "green"):
        if settings.get(name):
            start_binary(name, pods[name], settings[name], bin_, secrets_made)

    print(f"\n{R.passed} passed, {len(R.failed)} failed")
    for name in R.failed:
        print(f"  failed: {name}")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
