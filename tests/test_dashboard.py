"""The chart's Grafana dashboard queries only metrics the gateway really exposes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from exchanger import metrics

DASHBOARD = Path(__file__).parent.parent / "charts/exchanger/dashboards/exchanger.json"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"and", "or", "unless", "inf", "nan"}
)
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def exposed() -> set[str]:
    """Every series name `/metrics` can show: counters with `_total`, histograms' parts."""
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def panels(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in nodes:
        yield panel
        yield from panels(panel.get("panels", []))


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: what is left once strings, label
    matchers, ranges, groupings, functions and keywords are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if word.lower() in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword or a function (sum, rate, histogram_quantile…)
        names.add(word)
    return names


def test_metric_names_are_extracted_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, endpoint) (rate(a_bucket{job=~"$job", x="y{z}"}'
        "[$__rate_interval]))) / on (endpoint) sum without (le) (b_total) > bool 0"
    )
    assert metric_names(expr) == {"a_bucket", "b_total"}


def test_every_panel_queries_exposed_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    known = exposed()
    used: set[str] = set()
    queries = 0
    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: no metric in {target['expr']!r}"
            assert names <= known, f"{panel['title']}: not exposed: {sorted(names - known)}"
            used |= names
            queries += 1
    assert queries >= 10
    # Every family the gateway exports is on the dashboard.
    for family in metrics.REGISTRY.collect():
        assert any(name.startswith(family.name) for name in used), family.name


def test_panels_are_unique_and_placed() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard["panels"]):
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
