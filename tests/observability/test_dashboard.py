"""The Grafana dashboard and provisioning files are well-formed for file provisioning."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.observability.promql import (
    DASHBOARD,
    REPO,
    dashboard_targets,
    exported_series,
    iter_panels,
    load_dashboard,
    load_rules,
    metric_names,
)

PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def test_dashboard_identity_and_shape() -> None:
    dash = load_dashboard()
    assert dash["uid"] == "exitserve"
    assert dash["title"]
    assert isinstance(dash["schemaVersion"], int)
    # Provisioned dashboards must not carry an id or import-only inputs.
    assert dash.get("id") is None
    assert "__inputs" not in dash
    assert json.loads(DASHBOARD.read_text()) == dash


def test_template_variables() -> None:
    variables = _variables(load_dashboard())
    assert set(variables) >= {"datasource", "model", "instance"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("model", "instance"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"] == DATASOURCE
        assert var["query"].startswith("label_values(")
        assert var["definition"] == var["query"]
    # The model variable may depend on the instance, never the reverse (no cycles).
    assert "$model" not in variables["instance"]["query"]


def test_every_panel_uses_the_datasource_variable() -> None:
    dash = load_dashboard()
    ids: list[int] = []
    for panel in iter_panels(dash["panels"]):
        ids.append(panel["id"])
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] >= 0
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["title"], panel
        assert panel.get("description"), panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
    assert len(ids) == len(set(ids))


def test_every_query_filters_on_the_model_and_instance_variables() -> None:
    for t in dashboard_targets(load_dashboard()):
        selectors = t.expr.count("{")
        assert selectors > 0, t
        assert t.expr.count('model="$model"') == selectors, t
        assert t.expr.count('instance=~"$instance"') == selectors, t


def test_queries_and_rules_name_only_exported_metrics() -> None:
    """Checked without Prometheus too, so a typo fails even where the binary is absent."""
    known = set(exported_series()) | {"up"} | {r.name for r in load_rules() if r.kind == "record"}
    exprs = [t.expr for t in dashboard_targets(load_dashboard())] + [r.expr for r in load_rules()]
    for expr in exprs:
        unknown = metric_names(expr) - known
        assert not unknown, (unknown, expr)


def test_the_issue_s_panels_are_there() -> None:
    exprs = " ".join(t.expr for t in dashboard_targets(load_dashboard()))
    for needle in (
        "exitserve_requests_total",
        "histogram_quantile(0.5, sum by (le) (rate(exitserve_request_duration_seconds_bucket",
        "histogram_quantile(0.95, sum by (le) (rate(exitserve_request_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(exitserve_request_duration_seconds_bucket",
        "sum by (exit) (rate(exitserve_samples_total",
        "exitserve_compute_used_macs_total",
        "exitserve_compute_full_macs_total",
        "exitserve_segment_compute_seconds_bucket",
        "exitserve_queue_wait_seconds_bucket",
        "exitserve_batch_size_",
        "exitserve_inflight_requests",
        "exitserve_queue_depth",
        "exitserve_calibrated_exit_share",
        "rate(exitserve_fidelity_agreed_total",
        "rate(exitserve_fidelity_compared_total",
        "exitserve_fidelity_target",
        "exitserve_fidelity_threshold{",
        "exitserve_shadow_samples_total",
        "exitserve_shadow_shed_total",
        "exitserve_fidelity_state",
        "exitserve_fidelity_threshold_changes_total",
    ):
        assert needle in exprs, needle


def test_provisioning_files() -> None:
    ds = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"].startswith("http")
    assert source["jsonData"]["timeInterval"]

    dash = yaml.safe_load((PROVISIONING / "dashboards" / "exitserve.yml").read_text())
    assert dash["apiVersion"] == 1
    (provider,) = dash["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
