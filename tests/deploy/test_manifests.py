"""deploy/: valid Kubernetes objects, and consistent with the aggregator config they carry.

Each object is checked against the Kubernetes OpenAPI schemas bundled with
`kubernetes-validate` (offline, unknown fields refused). Then each aggregator
workload is read the way the kubelet and the aggregator would: its config
comes out of the ConfigMap and goes through our own parser, and every path,
port, Secret key, database URL and probe in the Deployment must agree with it.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.paths import REPO
from twinmpc.services.aggregator.config import AggregatorConfig, load_aggregator_config
from twinmpc.services.listen import split_listen

DEPLOY = REPO / "deploy"
KUBERNETES_VERSION = "1.30.0"  # a release every supported managed Kubernetes still offers
OPERATORS = {"twinmpc-a": "operator-a", "twinmpc-b": "operator-b"}  # namespace -> folder


def load_all() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                found.append((f"{path.relative_to(DEPLOY)}#{i} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}", doc))
    return found


DOCS = load_all()


def objects(kind: str, namespace: str | None = None, folder: str | None = None) -> list[dict]:
    return [d for name, d in DOCS if d["kind"] == kind and (namespace is None or d["metadata"].get("namespace") == namespace)
            and (folder is None or name.startswith(folder + "/"))]


def one(kind: str, namespace: str, name: str, folder: str | None = None) -> dict:
    hits = [d for d in objects(kind, namespace, folder) if d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind} {namespace}/{name}, found {len(hits)}"
    return hits[0]


@pytest.mark.parametrize("doc", [d for _, d in DOCS], ids=[n for n, _ in DOCS])
def test_object_matches_the_kubernetes_schema(doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_two_operators_in_two_namespaces():
    assert {d["metadata"]["name"] for d in objects("Namespace")} == set(OPERATORS)
    for name, doc in DOCS:
        if doc["kind"] != "Namespace":
            namespace = doc["metadata"].get("namespace")
            assert namespace in OPERATORS, f"{name}: namespace {namespace!r}"
            folder = name.split("/")[0]
            assert folder in (OPERATORS[namespace], "secrets"), f"{name} is in {namespace}, filed under {folder}/"


class Workload:
    """An aggregator Deployment read together with its ConfigMap-borne config."""

    def __init__(self, namespace: str, tmp_path: Path) -> None:
        folder = OPERATORS[namespace]
        serving = [d for d in objects("Deployment", namespace, folder)
                   if any(c.get("args", [])[:2] == ["aggregator", "serve"] for c in d["spec"]["template"]["spec"]["containers"])]
        assert len(serving) == 1, f"{namespace}: expected one aggregator Deployment"
        self.namespace, self.folder, self.deployment = namespace, folder, serving[0]
        self.pod = self.deployment["spec"]["template"]
        self.container = next(c for c in self.pod["spec"]["containers"] if c["args"][:2] == ["aggregator", "serve"])
        assert self.container["args"][2] == "--config"
        self.config_path = Path(self.container["args"][3])
        self.volumes = {v["name"]: v for v in self.pod["spec"]["volumes"]}
        self.mounts = {m["mountPath"]: m for m in self.container["volumeMounts"]}
        config_map = self.volumes[self.mounts[str(self.config_path.parent)]["name"]]["configMap"]["name"]
        text = one("ConfigMap", namespace, config_map, folder)["data"][self.config_path.name]
        (tmp_path / "aggregator.toml").write_text(text)
        self.config: AggregatorConfig = load_aggregator_config(tmp_path / "aggregator.toml")

    def secret_keys(self, volume: str) -> set[str]:
        name = self.volumes[volume]["secret"]["secretName"]
        return set(one("Secret", self.namespace, name, "secrets")["data"])


@pytest.fixture(params=sorted(OPERATORS))
def workload(request, tmp_path) -> Workload:
    return Workload(request.param, tmp_path)


def test_config_paths_are_mounted(workload):
    cfg = workload.config
    for path in (cfg.tls.cert, cfg.tls.key, cfg.tls.ca):
        assert str(path.parent) in workload.mounts, f"{path} is not under a volume the container mounts"
    data = workload.mounts[str(cfg.data_dir)]
    claim = workload.volumes[data["name"]]["persistentVolumeClaim"]["claimName"]
    one("PersistentVolumeClaim", workload.namespace, claim, workload.folder)
    assert "readOnly" not in data, "data_dir holds the store and the audit log: it must be writable"


def test_secrets_are_installed_where_the_config_reads_them(workload):
    """An init container copies each Secret to a folder the aggregator mounts, with mode 0600 (the key loaders refuse more)."""
    cfg = workload.config
    installed: dict[str, set[str]] = {}
    for init in workload.pod["spec"].get("initContainers", []):
        init_mounts = {m["mountPath"]: m for m in init["volumeMounts"]}
        for source, target in re.findall(r"install -m 0600 (\S+)/\* (\S+?)/?(?:\s|$)", init["command"][-1]):
            keys = workload.secret_keys(init_mounts[source]["name"])
            same = workload.mounts[target]
            assert (init_mounts[target]["name"], init_mounts[target].get("subPathExpr")) == (same["name"], same.get("subPathExpr"))
            installed.setdefault(target, set()).update(keys)
    tls_dir = str(cfg.tls.cert.parent)
    assert {cfg.tls.cert.name, cfg.tls.key.name, cfg.tls.ca.name} <= installed.get(tls_dir, set())
    assert workload.volumes[workload.mounts[tls_dir]["name"]]["emptyDir"]["medium"] == "Memory"
    shared_keys = installed.get(str(cfg.data_dir), set())
    if workload.deployment["spec"]["replicas"] > 1:
        assert shared_keys == {"hpke_key.json", "datastore.key"}, "replicas must share the HPKE and datastore keys"


def test_ports_and_probes_follow_the_config(workload):
    ports = {p["name"]: p["containerPort"] for p in workload.container["ports"]}
    assert split_listen(workload.config.listen)[1] == ports["grpc"]
    assert split_listen(workload.config.metrics_listen)[1] == ports["metrics"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = workload.container[probe]["exec"]["command"]
        assert command[:5] == ["twinmpc", "aggregator", "health", "--config", str(workload.config_path)], probe
    pod_labels = workload.pod["metadata"]["labels"]
    services = objects("Service", workload.namespace, workload.folder)
    aggregator_services = [s for s in services if s["spec"]["selector"].items() <= pod_labels.items()]
    assert {p["targetPort"] for s in aggregator_services for p in s["spec"]["ports"]} == {"grpc", "metrics"}
    for policy in objects("NetworkPolicy", workload.namespace, workload.folder):
        if policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items():
            named = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
            assert named <= set(ports), f"{policy['metadata']['name']} names ports the pod does not have"


def test_database_is_the_postgres_of_the_same_operator(workload):
    cfg = workload.config
    deployment = workload.deployment["spec"]
    if cfg.database_url is None:  # SQLite: one writer
        assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"
        return
    assert deployment["replicas"] > 1, "the PostgreSQL-backed aggregator is the one that scales out"
    url = urlsplit(cfg.database_url)
    service_name, namespace = url.hostname.split(".")[:2]
    assert namespace == workload.namespace
    service = one("Service", namespace, service_name, workload.folder)
    assert url.port == service["spec"]["ports"][0]["port"]
    postgres = next(s for s in objects("StatefulSet", namespace, workload.folder)
                    if s["spec"]["template"]["metadata"]["labels"].items() >= service["spec"]["selector"].items())
    env = {e["name"]: e for e in postgres["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POSTGRES_USER"]["value"] == url.username and env["POSTGRES_DB"]["value"] == url.path.lstrip("/")
    mine = {e["name"]: e for e in workload.container["env"]}[cfg.database_password_env]["valueFrom"]["secretKeyRef"]
    assert mine == env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert mine["key"] in one("Secret", namespace, mine["name"], "secrets")["data"]
