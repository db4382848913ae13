"""The lexical PromQL helpers the live test relies on: if they mis-split, it proves nothing."""

from __future__ import annotations

import pytest

from tests.observability.promql import (
    exported_series,
    label_names,
    label_values,
    metric_names,
    signals,
    strip_parens,
    substitute,
)


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("up == 0", ["up"]),
        (
            'max by (instance, model) (exitserve_model_ready{job="x"}) == 0',
            ['max by (instance, model) (exitserve_model_ready{job="x"})'],
        ),
        ("a:b:c > 0.05\nand on (model)\nd:e:f > 0.1", ["a:b:c", "d:e:f"]),
        (
            "(a > (14.4 * 0.01) and b > (14.4 * 0.01)) or (c > (6 * 0.01) and d > 6e-2)",
            ["a", "b", "c", "d"],
        ),
        (
            "abs(x - on (e) max by (e) (y)) > 0.1 and on (m) sum by (m) (increase(z[1h])) > 1000",
            ["abs(x - on (e) max by (e) (y))", "sum by (m) (increase(z[1h]))"],
        ),
        (
            'sum(rate(r{code=~"5..|>"}[5m])) / sum(rate(r[5m])) > bool 0.5',
            ['sum(rate(r{code=~"5..|>"}[5m])) / sum(rate(r[5m]))'],
        ),
        ("a > b", ["a", "b"]),
        ("(a or 0 * b) / c", ["(a or 0 * b) / c"]),
    ],
)
def test_signals_strip_thresholds(expr: str, want: list[str]) -> None:
    assert [" ".join(s.split()) for s in signals(expr)] == want


def test_strip_parens_only_strips_enclosing_pairs() -> None:
    assert strip_parens("((a + b))") == "a + b"
    assert strip_parens("(a) / (b)") == "(a) / (b)"


def test_metric_names_skip_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, stage) (rate(foo_bucket{le="0.25", x=~"a"}[5m]))) '
        "/ ignoring (exit) group_left sum without (instance) (rec:bar:rate5m offset 1m) "
        "or vector(1e-9) and bool Inf"
    )
    assert metric_names(expr) == {"foo_bucket", "rec:bar:rate5m"}


def test_label_names_from_matchers_and_modifiers() -> None:
    expr = 'sum by (le, stage) (foo{le="0.25", x!~"a"}) / ignoring (exit) group_left (v) bar'
    assert label_names(expr) == {"le", "stage", "x", "exit", "v"}


def test_substitute_all_variable_forms() -> None:
    got = substitute(
        'a{m="$model", i=~"${instance}"}[$__rate_interval] [[model]]',
        {"model": "tiny", "instance": "h:1", "__rate_interval": "30s"},
    )
    assert got == 'a{m="tiny", i=~"h:1"}[30s] tiny'
    with pytest.raises(KeyError):
        substitute("$nope", {})


def test_label_values_query() -> None:
    assert label_values('label_values(up{a=~"$x"}, instance)') == ('up{a=~"$x"}', "instance")


def test_exported_series_follow_prometheus_client_suffixes() -> None:
    series = exported_series()
    assert "exitserve_samples_total" in series
    assert "exitserve_samples" not in series
    assert {"model", "version", "exit", "instance"} <= series["exitserve_samples_total"]
    assert "le" in series["exitserve_request_duration_seconds_bucket"]
    assert "exitserve_request_duration_seconds_count" in series
    assert "exitserve_queue_depth" in series
