"""Custom resources, which kubernetes-validate has no schema for: ServiceMonitor, PodMonitor
(Prometheus Operator), ServingRuntime and InferenceService (KServe).

Each is checked against a schema of the fields these manifests may use, closed to unknown
keys (a typo fails), whose embedded Kubernetes types (Container, Volume, Toleration, ...)
are the real strict ones shipped with kubernetes-validate; then against what it refers to.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import pytest
import referencing
from referencing.jsonschema import DRAFT202012

from tests.deploy.manifests import (
    CRD_KINDS,
    K8S_VERSIONS,
    REPO,
    Doc,
    by_name,
    container_env,
    duration_s,
    effective,
    named_ports,
    of_kind,
)

K8S = "/api/_definitions.json#/$defs/io.k8s."


def _ref(name: str) -> dict[str, str]:
    return {"$ref": K8S + name}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


STRING = {"type": "string"}
DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h))+$"}
LABELS = {"type": "object", "additionalProperties": STRING}
META = _ref("apimachinery.pkg.apis.meta.v1.ObjectMeta")
SELECTOR = _ref("apimachinery.pkg.apis.meta.v1.LabelSelector")


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _closed(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": META,
            "spec": spec,
        },
        ("apiVersion", "kind", "metadata", "spec"),
    )


_SCRAPE = {
    "port": STRING,
    "path": {"type": "string", "pattern": "^/"},
    "scheme": {"enum": ["http", "https"]},
    "interval": DURATION,
    "scrapeTimeout": DURATION,
    "honorLabels": {"type": "boolean"},
    "relabelings": {"type": "array"},
    "metricRelabelings": {"type": "array"},
}
_NAMESPACE_SELECTOR = _closed({"any": {"type": "boolean"}, "matchNames": {"type": "array"}})

# Field names as the CRDs define them (prometheus-operator monitoring.coreos.com/v1, KServe
# serving.kserve.io v1alpha1/v1beta1), limited to what a manifest here could sensibly set.
SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": _resource(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        _closed(
            {
                "selector": SELECTOR,
                "namespaceSelector": _NAMESPACE_SELECTOR,
                "jobLabel": STRING,
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _closed(_SCRAPE, ("port",)),
                },
            },
            ("selector", "endpoints"),
        ),
    ),
    "PodMonitor": _resource(
        "monitoring.coreos.com/v1",
        "PodMonitor",
        _closed(
            {
                "selector": SELECTOR,
                "namespaceSelector": _NAMESPACE_SELECTOR,
                "jobLabel": STRING,
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _closed(_SCRAPE, ("port",)),
                },
            },
            ("selector", "podMetricsEndpoints"),
        ),
    ),
    "ServingRuntime": _resource(
        "serving.kserve.io/v1alpha1",
        "ServingRuntime",
        _closed(
            {
                "supportedModelFormats": {
                    "type": "array",
                    "minItems": 1,
                    "items": _closed(
                        {
                            "name": STRING,
                            "version": STRING,
                            "autoSelect": {"type": "boolean"},
                            "priority": {"type": "integer", "minimum": 1},
                        },
                        ("name",),
                    ),
                },
                "protocolVersions": {
                    "type": "array",
                    "items": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
                },
                "multiModel": {"type": "boolean"},
                "disabled": {"type": "boolean"},
                "containers": {
                    "type": "array",
                    "minItems": 1,
                    "items": _ref("api.core.v1.Container"),
                },
                "volumes": {"type": "array", "items": _ref("api.core.v1.Volume")},
                "nodeSelector": LABELS,
                "tolerations": {"type": "array", "items": _ref("api.core.v1.Toleration")},
                "affinity": _ref("api.core.v1.Affinity"),
                "labels": LABELS,
                "annotations": LABELS,
            },
            ("supportedModelFormats", "containers"),
        ),
    ),
    "InferenceService": _resource(
        "serving.kserve.io/v1beta1",
        "InferenceService",
        _closed(
            {
                "predictor": _closed(
                    {
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 1},
                        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                        "scaleTarget": {"type": "integer", "minimum": 1},
                        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
                        "serviceAccountName": STRING,
                        "nodeSelector": LABELS,
                        "tolerations": {"type": "array", "items": _ref("api.core.v1.Toleration")},
                        "affinity": _ref("api.core.v1.Affinity"),
                        "model": _closed(
                            {
                                "runtime": STRING,
                                "modelFormat": _closed(
                                    {"name": STRING, "version": STRING}, ("name",)
                                ),
                                "protocolVersion": {"enum": ["v1", "v2", "grpc-v2"]},
                                "storageUri": STRING,
                                "resources": _ref("api.core.v1.ResourceRequirements"),
                                "env": {"type": "array", "items": _ref("api.core.v1.EnvVar")},
                                "args": {"type": "array", "items": STRING},
                            },
                            ("modelFormat",),
                        ),
                    },
                    ("model",),
                ),
            },
            ("predictor",),
        ),
    ),
}


@cache
def _registry() -> referencing.Registry[Any]:
    """The strict Kubernetes definitions, where the `$ref`s above point."""
    folder = f"v{K8S_VERSIONS[0]}-local-strict"
    path = resources.files("kubernetes_validate") / "kubernetes-json-schema" / folder
    definitions = json.loads((path / "_definitions.json").read_text())
    resource = DRAFT202012.create_resource(definitions)
    return referencing.Registry().with_resource(
        "https://kubernetes.io/api/_definitions.json", resource
    )


def _validate(doc: Doc) -> None:
    schema = {"$id": "https://kubernetes.io/api/exitserve-crds.json", **SCHEMAS[doc["kind"]]}
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10]]
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}:\n" + "\n".join(lines))


def _custom(rendered: dict[str, list[Doc]]) -> list[tuple[str, Doc]]:
    return [
        (name, d)
        for name, docs in rendered.items()
        for d in docs
        if (d["apiVersion"], d["kind"]) in CRD_KINDS
    ]


def test_every_crd_kind_has_a_schema() -> None:
    assert {kind for _, kind in CRD_KINDS} == set(SCHEMAS)


def test_the_schemas_reject_typos() -> None:
    """The checks can fail: an unknown key, deep or shallow, is an error."""
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"prot": "metrics"}]},
    }
    with pytest.raises(pytest.fail.Exception, match="prot"):
        _validate(bad)
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "x"},
        "spec": {
            "supportedModelFormats": [{"name": "x"}],
            "containers": [{"name": "c", "image": "i", "readinessProbe": {"httpGett": {}}}],
        },
    }
    with pytest.raises(pytest.fail.Exception, match="httpGett"):
        _validate(runtime)


def test_custom_resources_match_their_schemas(rendered: dict[str, list[Doc]]) -> None:
    found = _custom(rendered)
    assert {d["kind"] for _, d in found} == set(SCHEMAS), "every CRD kind is used somewhere"
    for _, doc in found:
        _validate(doc)


def _check_scrape(endpoint: Doc, ports: set[str], where: str) -> None:
    assert endpoint["port"] in ports, f"{where}: scrapes port {endpoint['port']}, not in {ports}"
    assert endpoint.get("path", "/metrics") == "/metrics", where
    assert duration_s(endpoint["scrapeTimeout"]) <= duration_s(endpoint["interval"]), where


def test_service_monitors_scrape_the_metrics_port(rendered: dict[str, list[Doc]]) -> None:
    for name, docs in rendered.items():
        for monitor in of_kind(docs, "ServiceMonitor"):
            wanted = monitor["spec"]["selector"]["matchLabels"]
            services = [
                s
                for s in of_kind(docs, "Service")
                if wanted.items() <= s["metadata"]["labels"].items()
            ]
            assert len(services) == 1, f"{name}: ServiceMonitor selects {len(services)} Services"
            ports = {p["name"] for p in services[0]["spec"]["ports"]}
            for endpoint in monitor["spec"]["endpoints"]:
                _check_scrape(endpoint, ports, name)
            # kube-prometheus-stack selects monitors by its release label.
            assert "release" in monitor["metadata"]["labels"], name


def test_kserve_runtime_and_inference_service_agree(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["deploy/kserve"]
    isvc = by_name(docs, "InferenceService", "exitserve")
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    runtime = by_name(docs, "ServingRuntime", model["runtime"])
    spec = runtime["spec"]

    formats = {(f["name"], f.get("version")) for f in spec["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    assert spec["protocolVersions"] == ["v2"]
    assert model["protocolVersion"] == "v2"

    container = spec["containers"][0]
    assert container["name"] == "kserve-container", "KServe merges the predictor into it"
    env = container_env(container, docs)
    # KServe mounts storageUri at /mnt/models; the server must read the repository there.
    assert effective(env, "model_repository") == "/mnt/models"
    assert container["ports"][0]["containerPort"] == int(effective(env, "http_port")), (
        "KServe routes to the first port"
    )

    # The same repository as the plain Deployment: the PVC of deploy/k8s/model-repository.
    assert model["storageUri"].startswith("pvc://")
    claim = model["storageUri"].removeprefix("pvc://").split("/", 1)[0]
    shared = {d["metadata"]["name"] for d in rendered["deploy/k8s/model-repository"]}
    assert claim in shared, f"storageUri claim {claim} is not the shared model repository"
    assert claim in {d["metadata"]["name"] for d in of_kind(docs, "PersistentVolumeClaim")}

    # Two ports (API + metrics) need RawDeployment: Knative allows one.
    if len(container["ports"]) > 1:
        mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        assert mode in ("RawDeployment", "Standard")
    assert model["resources"]["limits"].get("nvidia.com/gpu") == "1"


def _rules_jobs() -> set[str]:
    """The `job` values the recording/alerting rules select on."""
    rules = REPO / "deploy" / "prometheus" / "rules.yml"
    return set(re.findall(r'job="([^"]+)"', rules.read_text())) if rules.exists() else set()


def test_scraped_series_get_the_job_the_rules_expect(rendered: dict[str, list[Doc]]) -> None:
    """The operator sets `job` to the Service's name (ServiceMonitor) or to the value of the
    `jobLabel` label; deploy/prometheus/rules.yml alerts on that job."""
    expected = _rules_jobs()
    for name, docs in rendered.items():
        for monitor in of_kind(docs, "ServiceMonitor"):
            label = monitor["spec"].get("jobLabel")
            for service in of_kind(docs, "Service"):
                wanted = monitor["spec"]["selector"]["matchLabels"]
                if wanted.items() <= service["metadata"]["labels"].items():
                    job = (
                        service["metadata"]["labels"][label]
                        if label
                        else service["metadata"]["name"]
                    )
                    assert not expected or job in expected, f"{name}: job {job}, rules: {expected}"
        for monitor in of_kind(docs, "PodMonitor"):
            label = monitor["spec"].get("jobLabel")
            assert label, f"{name}: without jobLabel the job is <namespace>/<PodMonitor name>"
            job = monitor["spec"]["selector"]["matchLabels"].get(label)
            assert not expected or job in expected, f"{name}: job {job}, rules: {expected}"


def test_kserve_pod_monitor_selects_the_predictor(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["deploy/kserve"]
    isvc = by_name(docs, "InferenceService", "exitserve")
    runtime = by_name(docs, "ServingRuntime", isvc["spec"]["predictor"]["model"]["runtime"])
    ports = set(named_ports(runtime["spec"]["containers"][0]))
    for monitor in of_kind(docs, "PodMonitor"):
        # KServe labels predictor pods with their InferenceService's name.
        labels = monitor["spec"]["selector"]["matchLabels"]
        assert labels == {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            _check_scrape(endpoint, ports, "deploy/kserve")
        assert "release" in monitor["metadata"]["labels"]
