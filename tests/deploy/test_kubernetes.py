"""Kubernetes manifests: every kustomization renders, validates strictly against the Kubernetes
schemas offline, and agrees with the server it deploys (routes, ports, settings, drain)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from tests.deploy.manifests import (
    ADAPTER_VALUES,
    CRD_KINDS,
    ENV_PREFIX,
    EXIT_MARGIN_S,
    K8S_VERSIONS,
    REPO,
    AppRoutes,
    Doc,
    by_name,
    container_env,
    cpu_cores,
    effective,
    env_names,
    kustomizations,
    metric_series_names,
    named_ports,
    of_kind,
    secret_settings,
    setting_names,
    workloads,
)

KUSTOMIZATIONS = [str(k) for k in kustomizations()]
OVERLAYS = [k for k in KUSTOMIZATIONS if "/overlays/" in k]
# Where the server itself runs (not the seed Job's one-off copy).
SERVER_CONTAINERS = {"exitserve", "kserve-container"}


def server_containers(docs: list[Doc]) -> list[tuple[Doc, Doc]]:
    """(pod spec, container) for every exitserve server container in the documents."""
    return [
        (w.pod, c) for w in workloads(docs) for c in w.containers if c["name"] in SERVER_CONTAINERS
    ]


def test_there_is_something_to_check() -> None:
    assert {"deploy/k8s/overlays/gpu", "deploy/k8s/overlays/cpu", "deploy/kserve"} <= set(
        KUSTOMIZATIONS
    )


def test_makefile_validates_the_same_versions() -> None:
    makefile = (REPO / "Makefile").read_text()
    match = re.search(r"^K8S_VERSIONS\s*[:?]?=\s*(.+)$", makefile, re.M)
    assert match, "Makefile has no K8S_VERSIONS for deploy-check"
    assert tuple(match.group(1).split()) == K8S_VERSIONS
    test_line = re.search(r"^test:(.*)$", makefile, re.M)
    assert test_line
    assert "deploy-check" in test_line.group(1).split()


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_schema_strict(rendered: dict[str, list[Doc]], name: str, version: str) -> None:
    """Every built-in kind validates strictly (unknown fields rejected); no kind is skipped
    unless it is a custom resource that test_crds checks."""
    docs = rendered[name]
    assert docs, f"{name} renders nothing"
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        ident = f"{doc['kind']}/{doc['metadata']['name']} ({doc['apiVersion']})"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{name}: no schema for {ident}: a typo, or a CRD to add to CRD_KINDS")
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name}: {ident} invalid for {version} at {path}: {exc.message}")


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_security_context(rendered: dict[str, list[Doc]], name: str) -> None:
    for w in workloads(rendered[name]):
        pod_ctx = w.pod.get("securityContext", {})
        for c in w.containers:
            ctx = {**pod_ctx, **c.get("securityContext", {})}
            where = f"{name}: {w.kind}/{w.name} container {c['name']}"
            assert ctx.get("runAsNonRoot") is True, where
            assert int(ctx.get("runAsUser", 0)) > 0, where
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("privileged", False) is False, where
            assert c.get("securityContext", {}).get("capabilities", {}).get("drop") == ["ALL"]
        if w.kind != "ServingRuntime":  # KServe fills in the pod-level fields itself
            assert w.pod.get("automountServiceAccountToken") is False, f"{name}: {w.name}"
            assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_resources_requested_and_limited(rendered: dict[str, list[Doc]], name: str) -> None:
    for w in workloads(rendered[name]):
        for c in w.containers:
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part, {})), f"{name}: {c['name']} {part}"
            assert cpu_cores(res["requests"]["cpu"]) <= cpu_cores(res["limits"]["cpu"])


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_images_are_tagged(rendered: dict[str, list[Doc]], name: str) -> None:
    for w in workloads(rendered[name]):
        for c in w.containers:
            image = c["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if name == "deploy/k8s/base":
                continue  # the overlays set the image
            assert tag, f"{name}: {c['name']} image {image!r} needs a tag"
            assert tag != "latest", f"{name}: {c['name']} image {image!r} is :latest"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_probes_hit_real_routes_on_the_http_port(
    rendered: dict[str, list[Doc]], name: str, routes: AppRoutes
) -> None:
    docs = rendered[name]
    for _, c in server_containers(docs):
        env, ports = container_env(c, docs), named_ports(c)
        http_port = int(effective(env, "http_port"))
        want = {
            "startupProbe": "/v2/health/ready",
            "readinessProbe": "/v2/health/ready",
            "livenessProbe": "/v2/health/live",
        }
        for probe, path in want.items():
            get = c[probe]["httpGet"]
            assert get["path"] == path, f"{name}: {probe}"
            assert routes.answers(get["path"]), f"{name}: {probe} {get['path']} is not a route"
            port = get["port"]
            number = ports[port] if isinstance(port, str) else int(port)
            assert number == http_port, f"{name}: {probe} probes {port}, server is on {http_port}"
        # A slow start must not be killed by liveness: the startup probe covers warm-up.
        start = c["startupProbe"]
        assert start["periodSeconds"] * start["failureThreshold"] >= 120


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_container_ports_are_the_servers(rendered: dict[str, list[Doc]], name: str) -> None:
    """Named ports match the ports the server binds (its env, else Settings defaults)."""
    docs = rendered[name]
    for _, c in server_containers(docs):
        env, ports = container_env(c, docs), named_ports(c)
        http_name = "http1" if c["name"] == "kserve-container" else "http"
        assert ports[http_name] == int(effective(env, "http_port")), name
        assert ports["metrics"] == int(effective(env, "metrics_port")), name
        assert effective(env, "host") == "0.0.0.0", f"{name}: must listen beyond loopback"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_settings_keys_are_real(rendered: dict[str, list[Doc]], name: str) -> None:
    """Each ConfigMap key and EXITSERVE_* variable names a Settings field; secrets stay out
    of ConfigMaps."""
    fields = setting_names()
    docs = rendered[name]
    for cm in of_kind(docs, "ConfigMap"):
        for key in cm.get("data", {}):
            assert key.startswith(ENV_PREFIX), f"{name}: {key} is not an {ENV_PREFIX} setting"
            field = key.removeprefix(ENV_PREFIX).lower()
            assert field in fields, f"{name}: {key}: Settings has no field {field!r}"
            assert field not in secret_settings(), f"{name}: secret {key} in a ConfigMap"
    for _, c in server_containers(docs):
        for var in env_names(c, docs):
            if var.startswith(ENV_PREFIX):
                assert var.removeprefix(ENV_PREFIX).lower() in fields, f"{name}: {var}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_settings_values_validate(
    rendered: dict[str, list[Doc]],
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server would accept its environment (types, ranges, JSON) at start."""
    from service.settings import Settings

    docs = rendered[name]
    for _, c in server_containers(docs):
        env = container_env(c, docs)
        for var in [v for v in os.environ if v.startswith(ENV_PREFIX)]:
            monkeypatch.delenv(var)
        for var, value in env.items():
            if var.startswith(ENV_PREFIX):
                monkeypatch.setenv(var, value)
        try:
            # The repository path exists only in the pod; the rest is checked as is.
            Settings(model_repository=tmp_path)
        except ValidationError as exc:
            pytest.fail(f"{name}: {c['name']} settings rejected:\n{exc}")


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_grace_period_covers_the_drain(rendered: dict[str, list[Doc]], name: str) -> None:
    """SIGTERM comes after preStop; the drain then needs drain_timeout_s and the exit margin,
    all inside terminationGracePeriodSeconds."""
    docs = rendered[name]
    # (container, the spec holding its pod's terminationGracePeriodSeconds)
    pods = [(c, w.pod) for w in workloads(docs) if w.kind != "ServingRuntime" for c in w.containers]
    for isvc in of_kind(docs, "InferenceService"):
        runtime = by_name(docs, "ServingRuntime", isvc["spec"]["predictor"]["model"]["runtime"])
        pods += [(c, isvc["spec"]["predictor"]) for c in runtime["spec"]["containers"]]
    pods = [(c, holder) for c, holder in pods if c["name"] in SERVER_CONTAINERS]
    for c, holder in pods:
        grace = holder.get("terminationGracePeriodSeconds", 30)
        sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        drain = float(effective(container_env(c, docs), "drain_timeout_s"))
        assert sleep >= 1, f"{name}: no preStop sleep; endpoints lag SIGTERM"
        assert grace > sleep + drain + EXIT_MARGIN_S, (
            f"{name}: grace {grace} s <= preStop {sleep} + drain {drain} + {EXIT_MARGIN_S}"
        )


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_threads_fit_the_cpu_limit(rendered: dict[str, list[Doc]], name: str) -> None:
    docs = rendered[name]
    for _, c in server_containers(docs):
        env = container_env(c, docs)
        limit = cpu_cores(c["resources"]["limits"]["cpu"])
        threads = int(effective(env, "intra_op_threads"))
        # 0 = one per *node* core, which a CPU quota then throttles.
        assert 0 < threads <= limit, f"{name}: intra_op_threads {threads} vs cpu limit {limit}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_volumes(rendered: dict[str, list[Doc]], name: str) -> None:
    """Mounts have volumes; the model repository is a mounted volume (a PVC here), not only
    the image's copy; a read-only root gets a writable /tmp."""
    docs = rendered[name]
    claims = {d["metadata"]["name"] for d in of_kind(docs, "PersistentVolumeClaim")}
    for w in workloads(docs):
        volumes = {v["name"]: v for v in w.pod.get("volumes", [])}
        for c in w.containers:
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            for m in mounts.values():
                assert m["name"] in volumes, f"{name}: {c['name']} mounts unknown {m['name']}"
            if c["name"] not in SERVER_CONTAINERS:
                continue
            assert "/tmp" in mounts, f"{name}: read-only root needs a writable /tmp"
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]], name
            if c["name"] != "exitserve":
                continue  # KServe mounts storageUri itself
            repo = effective(container_env(c, docs), "model_repository")
            assert repo in mounts, f"{name}: model repository {repo} is not a mounted volume"
            volume = volumes[mounts[repo]["name"]]
            assert mounts[repo].get("readOnly") is True, name
            assert volume["persistentVolumeClaim"]["claimName"] in claims, name
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, name


@pytest.mark.parametrize("name", OVERLAYS)
def test_selectors_select_the_server(rendered: dict[str, list[Doc]], name: str) -> None:
    docs = rendered[name]
    deployment = by_name(docs, "Deployment", "exitserve")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = named_ports(container)

    service = by_name(docs, "Service", "exitserve")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["name"] for p in service["spec"]["ports"]} == {"http", "metrics"}
    for p in service["spec"]["ports"]:
        assert p["targetPort"] in ports, f"{name}: Service targets unknown port {p}"

    pdb = by_name(docs, "PodDisruptionBudget", "exitserve")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

    policy = by_name(docs, "NetworkPolicy", "exitserve")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    for rule in policy["spec"]["ingress"]:
        for p in rule["ports"]:
            assert p["port"] in ports, f"{name}: NetworkPolicy admits unknown port {p['port']}"
    admitted = {
        p["port"]: rule.get("from") for rule in policy["spec"]["ingress"] for p in rule["ports"]
    }
    assert set(admitted) == {"http", "metrics"}, "only the API and the metrics port"
    assert admitted["metrics"], "metrics must be admitted from Prometheus only"
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]

    hpa = by_name(docs, "HorizontalPodAutoscaler", "exitserve")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "exitserve")
    assert "replicas" not in deployment["spec"], "the HPA owns replicas"
    # Voluntary disruptions never take the last serving replica.
    assert hpa["spec"]["minReplicas"] - int(pdb["spec"]["maxUnavailable"]) >= 1


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_device(rendered: dict[str, list[Doc]], name: str) -> None:
    docs = rendered[name]
    container = by_name(docs, "Deployment", "exitserve")["spec"]["template"]["spec"]["containers"][
        0
    ]
    device = effective(container_env(container, docs), "device")
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    if name.endswith("/gpu"):
        assert gpus == "1"
        assert device == "cuda"
        assert container["image"].endswith("-gpu")
    else:
        assert gpus is None
        assert device == "cpu"
        assert container["image"].endswith("-cpu")


def _adapter_rules() -> list[dict[str, Any]]:
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    rules: list[dict[str, Any]] = values["rules"]["custom"]
    return rules


@pytest.mark.parametrize("name", OVERLAYS)
def test_hpa_metrics_come_from_adapter_rules(rendered: dict[str, list[Doc]], name: str) -> None:
    """Every Pods metric the HPA reads is one prometheus-adapter serves, computed from series
    the server really exports."""
    hpa = by_name(rendered[name], "HorizontalPodAutoscaler", "exitserve")
    served = {r["name"]["as"]: r for r in _adapter_rules()}
    exported = metric_series_names()
    metrics = hpa["spec"]["metrics"]
    assert metrics
    assert all(m["type"] == "Pods" for m in metrics)
    for m in metrics:
        metric = m["pods"]["metric"]["name"]
        assert metric in served, f"no prometheus-adapter rule serves {metric}"
        rule = served[metric]
        series = rule["seriesQuery"].split("{", 1)[0]
        assert series in exported, f"{series} is not an exitserve metric"
        assert re.fullmatch(rule["name"]["matches"], series), rule["name"]
        for used in re.findall(r"\bexitserve_\w+", rule["metricsQuery"]):
            assert used in exported, f"{metric}: query uses unknown {used}"
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"], f"{metric}: {placeholder}"
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
        assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}


def test_seed_job_fills_the_repository_the_server_mounts(rendered: dict[str, list[Doc]]) -> None:
    seed = rendered["deploy/k8s/seed-models"]
    job = by_name(seed, "Job", "exitserve-seed-models")
    claim = job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    for overlay in OVERLAYS:
        volumes = by_name(rendered[overlay], "Deployment", "exitserve")["spec"]["template"]["spec"][
            "volumes"
        ]
        claims = {
            v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
        }
        assert claim in claims, overlay
