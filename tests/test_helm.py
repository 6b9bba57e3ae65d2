"""The Helm chart (deploy/helm/qwen3-reranker), checked offline: lint, render, Kubernetes schemas.

helm is the pinned, checksummed binary that scripts/fetch-helm.sh puts in .tools/bin (scripts/test.sh
runs it). Core resources are validated with kubernetes-validate --strict; KEDA's ScaledObject and the
Prometheus operator's ServiceMonitor with models generated from their CRDs (cloudcoil), strictly:
a field the CRD does not know is an error. The helm test pod's script runs against the live server.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import API_KEY

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy/helm/qwen3-reranker"
HELM = ROOT / ".tools/bin/helm"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
VALUE_SETS = [None, *EXAMPLES]  # None: the chart's defaults
K8S_VERSION = "1.30.0"  # an older release still supported by every API the chart uses
GPU_EXAMPLES = {"gpu.yaml", "gpu-8b.yaml", "gpu-multi.yaml", "gpu-two-models.yaml", "hpa.yaml", "keda.yaml"}


def value_set_id(values: Path | None) -> str:
    return values.name if values else "defaults"


@pytest.fixture(scope="module")
def helm() -> Path:
    if not HELM.exists():
        pytest.fail("no helm at .tools/bin/helm: run scripts/fetch-helm.sh (scripts/test.sh does)")
    return HELM


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=check, cwd=ROOT)


def render(helm: Path, values: Path | None = None, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "rr", str(CHART), "--namespace", "search"]
    if values:
        args += ["-f", str(values)]
    args += [arg for s in sets for arg in ("--set", s)]
    out = run_helm(helm, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_error(helm: Path, *sets: str) -> str:
    """helm template with these --set values must fail: its error message."""
    args = ["template", "rr", str(CHART)] + [arg for s in sets for arg in ("--set", s)]
    result = run_helm(helm, *args, check=False)
    assert result.returncode != 0, f"rendered with {sets}"
    return result.stderr


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [dep] = of_kind(docs, "Deployment")
    return dep


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [c] = deployment(docs)["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


@pytest.mark.parametrize("values", VALUE_SETS, ids=value_set_id)
def test_lint_strict(helm, values):
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    result = run_helm(helm, *args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def validate_crd(doc: dict[str, Any]) -> None:
    """Strictly against the CRD's generated model: unknown fields are dropped by the model, so a
    round trip that loses anything means the CRD does not have that field."""
    if doc["kind"] == "ScaledObject":
        from cloudcoil.models.keda.v1alpha1 import ScaledObject as model
    elif doc["kind"] == "ServiceMonitor":
        from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor as model
    elif doc["kind"] == "PrometheusRule":
        from cloudcoil.models.prometheus_operator.v1 import PrometheusRule as model
    else:
        raise AssertionError(f"no schema for {doc['apiVersion']} {doc['kind']}")
    parsed = model.model_validate(doc).model_dump(by_alias=True, exclude_none=True, mode="json")
    assert parsed == doc, f"{doc['kind']} has fields its CRD does not define"


def validate(doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
        validate_crd(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("values", VALUE_SETS, ids=value_set_id)
def test_every_rendered_manifest_is_valid(helm, values):
    docs = render(helm, values)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "Pod"} <= kinds
    for doc in docs:
        validate(doc)


def test_the_validators_can_fail(helm):
    docs = render(
        helm, EXAMPLES[0], "autoscaling.keda.enabled=true", "serviceMonitor.enabled=true", "prometheusRule.enabled=true"
    )
    dep = deployment(docs)
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/ready"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    for kind in ("ScaledObject", "ServiceMonitor", "PrometheusRule"):
        [doc] = of_kind(docs, kind)
        doc["spec"]["replicas"] = 3
        with pytest.raises(AssertionError, match="fields its CRD does not define"):
            validate_crd(doc)


def test_values_schema_follows_the_server_settings():
    """values.schema.json's `config` is generated from server.core.settings.Settings."""
    result = subprocess.run(
        [sys.executable, "scripts/helm_values_schema.py", "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_schema_rejects_unknown_and_invalid_values(helm):
    for bad, message in [
        ("config.maxModelLen=10", "maxModelLen"),
        ("config.noSuchFlag=1", "noSuchFlag"),
        ("modelCache.type=nfs", "modelCache"),
    ]:
        error = render_error(helm, bad)
        assert message in error, (bad, error)


@pytest.mark.parametrize("values", VALUE_SETS, ids=value_set_id)
def test_probes(helm, values):
    c = container(render(helm, values))
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert env_of(c)["RERANK_PORT"] == "8000"


@pytest.mark.parametrize("values", VALUE_SETS, ids=value_set_id)
def test_grace_period_outlasts_the_drain(helm, values):
    docs = render(helm, values)
    env = env_of(container(docs))
    drain = float(env.get("RERANK_DRAIN_DELAY", 5)) + float(env.get("RERANK_DRAIN_TIMEOUT", 30))
    assert deployment(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain


def test_grace_period_follows_the_drain_settings_and_refuses_a_short_one(helm):
    docs = render(helm, None, "config.drainDelay=20", "config.drainTimeout=100")
    assert deployment(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 135
    result = run_helm(helm, "template", "rr", str(CHART), "--set", "terminationGracePeriodSeconds=30", check=False)
    assert result.returncode != 0 and "drain would be cut" in result.stderr


@pytest.mark.parametrize("values", VALUE_SETS, ids=value_set_id)
def test_gpus(helm, values):
    limits = container(render(helm, values))["resources"]["limits"]
    if values is None or values.name in GPU_EXAMPLES:
        assert limits["nvidia.com/gpu"] >= 1
    else:
        assert "nvidia.com/gpu" not in limits


def test_a_pod_with_several_gpus_runs_one_engine_per_gpu(helm):
    docs = render(helm, CHART / "examples/gpu-multi.yaml")
    c = container(docs)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert env_of(c)["RERANK_DATA_PARALLEL_SIZE"] == "4"
    assert "RERANK_DATA_PARALLEL_SIZE" not in env_of(container(render(helm)))


def test_two_models_reach_the_server_in_order_with_their_shares(helm, monkeypatch):
    from server.core.settings import Settings

    env = env_of(container(render(helm, CHART / "examples/gpu-two-models.yaml")))
    assert env["RERANK_MODEL"] == "Qwen/Qwen3-Reranker-0.6B,Qwen/Qwen3-Reranker-8B"
    for name in [k for k in os.environ if k.startswith("RERANK_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if isinstance(value, str):
            monkeypatch.setenv(name, value)
    small, large = Settings.from_env().served_models()
    assert (small.served_model_name, small.gpu_memory_utilization) == ("qwen3-reranker-0.6b", 0.25)
    assert (large.model, large.served_model_name, large.gpu_memory_utilization) == (
        "Qwen/Qwen3-Reranker-8B",
        "qwen3-reranker-8b",
        0.65,
    )


@pytest.mark.parametrize("values", VALUE_SETS, ids=value_set_id)
def test_replicas_belong_to_the_autoscaler_when_one_is_on(helm, values):
    docs = render(helm, values)
    autoscalers = of_kind(docs, "HorizontalPodAutoscaler") + of_kind(docs, "ScaledObject")
    spec = deployment(docs)["spec"]
    if values is not None and values.name in {"hpa.yaml", "keda.yaml"}:
        assert len(autoscalers) == 1 and "replicas" not in spec
    else:
        assert not autoscalers and spec["replicas"] >= 1


def test_both_autoscalers_at_once_is_refused(helm):
    assert "enable one" in render_error(helm, "autoscaling.hpa.enabled=true", "autoscaling.keda.enabled=true")


def test_autoscalers_scale_on_the_servers_pairs_in_flight(helm):
    from server.core.metrics import Metrics

    exported = Metrics().registry.get_sample_value("rerank_pairs_in_flight")
    assert exported is not None  # the metric name the autoscalers use is one the server serves
    [hpa] = of_kind(render(helm, CHART / "examples/hpa.yaml"), "HorizontalPodAutoscaler")
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "rerank_pairs_in_flight"
    [so] = of_kind(render(helm, CHART / "examples/keda.yaml"), "ScaledObject")
    [trigger] = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and "rerank_pairs_in_flight" in trigger["metadata"]["query"]
    assert 'namespace="search"' in trigger["metadata"]["query"]
    adapter = yaml.safe_load((ROOT / "deploy/prometheus-adapter/values.yaml").read_text())
    [rule] = adapter["rules"]["custom"]
    assert rule["name"]["as"] == "rerank_pairs_in_flight" and "rerank_pairs_in_flight" in rule["seriesQuery"]


def test_api_key_comes_from_a_secret_and_never_appears_in_plain_text(helm):
    key = "chart-test-key-5f0c9a"
    docs = render(helm, None, f"apiKey.value={key}", "serviceMonitor.enabled=true")
    [secret] = of_kind(docs, "Secret")
    assert base64.b64decode(secret["data"]["api-key"]).decode() == key
    assert key not in yaml.safe_dump_all(docs)
    ref = {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "api-key"}}
    assert env_of(container(docs))["RERANK_API_KEY"] == ref
    [test_pod] = of_kind(docs, "Pod")
    assert {e["name"]: e.get("valueFrom") for e in test_pod["spec"]["containers"][0]["env"]}["RERANK_API_KEY"] == ref
    [monitor] = of_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"] == ref["secretKeyRef"]

    docs = render(helm, CHART / "examples/gpu.yaml")
    assert not of_kind(docs, "Secret")  # an existing Secret is used, none created
    assert env_of(container(docs))["RERANK_API_KEY"] == {"secretKeyRef": {"name": "reranker-api-key", "key": "api-key"}}
    assert "RERANK_API_KEY" not in env_of(container(render(helm)))


def test_score_cache_settings_and_its_url_from_a_secret(helm, monkeypatch):
    docs = render(
        helm, None, "scoreCache.size=50000", "scoreCache.ttl=3600", "scoreCache.url.existingSecret=reranker-redis"
    )
    env = env_of(container(docs))
    assert env["RERANK_SCORE_CACHE_SIZE"] == "50000" and env["RERANK_SCORE_CACHE_TTL"] == "3600"
    assert env["RERANK_SCORE_CACHE_URL"] == {"secretKeyRef": {"name": "reranker-redis", "key": "url"}}
    for doc in docs:
        validate(doc)
    plain = env_of(container(render(helm)))
    assert not {"RERANK_SCORE_CACHE_SIZE", "RERANK_SCORE_CACHE_TTL", "RERANK_SCORE_CACHE_URL"} & set(plain)
    assert "scoreCache" in render_error(helm, "scoreCache.size=-1")
    from server.core.settings import Settings

    monkeypatch.setenv("RERANK_SCORE_CACHE_SIZE", env["RERANK_SCORE_CACHE_SIZE"])
    monkeypatch.setenv("RERANK_SCORE_CACHE_TTL", env["RERANK_SCORE_CACHE_TTL"])
    assert (Settings.from_env().score_cache_size, Settings.from_env().score_cache_ttl) == (50000, 3600)


@pytest.mark.parametrize("values", VALUE_SETS, ids=value_set_id)
def test_the_server_accepts_the_rendered_settings(helm, values, monkeypatch):
    from server.core.settings import Settings

    env = {k: v for k, v in env_of(container(render(helm, values))).items() if isinstance(v, str)}
    for name in [k for k in os.environ if k.startswith("RERANK_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.port == 8000 and str(settings.log_file) == "/workspace/vllm.log"
    assert settings.model[0].startswith("Qwen/Qwen3-Reranker-")


@pytest.mark.parametrize("values", VALUE_SETS, ids=value_set_id)
def test_pod_security_and_volumes(helm, values):
    docs = render(helm, values)
    pod = deployment(docs)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert "/dev/shm" in mounts and "/home/rerank/.cache" in mounts
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


def test_model_cache_options(helm):
    docs = render(helm, None, "modelCache.type=pvc")
    [pvc] = of_kind(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    volumes = {v["name"]: v for v in deployment(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    docs = render(helm, None, "modelCache.type=ephemeral")
    volumes = {v["name"]: v for v in deployment(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-cache"]["ephemeral"]["volumeClaimTemplate"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    docs = render(helm, None, "modelCache.type=none")
    assert "model-cache" not in {v["name"] for v in deployment(docs)["spec"]["template"]["spec"]["volumes"]}


@pytest.mark.engine
def test_helm_test_pod_script_passes_against_a_live_server(helm, server):
    """The script `helm test` runs in its pod: /ready, then one rerank with the API key."""
    [pod] = of_kind(render(helm, None, "apiKey.value=unused"), "Pod")
    [c] = pod["spec"]["containers"]
    assert c["command"] == ["python3", "-c"]
    env = {**os.environ, "SERVER_URL": server.url, "RERANK_API_KEY": API_KEY}
    result = subprocess.run([sys.executable, "-c", c["args"][0]], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "rerank ok" in result.stdout, result.stdout + result.stderr
    env["RERANK_API_KEY"] = "wrong-key"
    result = subprocess.run([sys.executable, "-c", c["args"][0]], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "401" in result.stderr


def test_the_prometheus_rule_carries_the_alerts_file(helm):
    """prometheusRule.enabled renders files/alerts.yaml's groups (tests/test_alerts.py tests them)."""
    assert not of_kind(render(helm), "PrometheusRule")
    docs = render(helm, None, "prometheusRule.enabled=true", "prometheusRule.labels.release=kube-prometheus")
    [rule] = of_kind(docs, "PrometheusRule")
    validate(rule)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
    assert rule["spec"]["groups"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())["groups"]


def test_the_grafana_dashboard_configmap_carries_the_dashboard(helm):
    """grafanaDashboard.enabled: a ConfigMap with the sidecar's label and files/dashboard.json
    (tests/test_prometheus.py runs every panel's query on a real Prometheus)."""
    assert not [d for d in of_kind(render(helm), "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    docs = render(helm, None, "grafanaDashboard.enabled=true")
    [dashboard] = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    validate(dashboard)
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["qwen3-reranker.json"]) == json.loads(
        (CHART / "files" / "dashboard.json").read_text()
    )
