"""configs/grafana-dashboard.json names only metrics (and labels) the relay and the encoder
export, reads them through a Prometheus datasource variable; the dashboard page ships as
package data."""

from __future__ import annotations

import fnmatch
import importlib.resources
import json
import re
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from encoder.metrics import SenderCollector
from encoder.status import SenderStatus
from monitor.metrics import RelayMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "configs" / "grafana-dashboard.json"
DATASOURCE_UID = "${datasource}"

# the series names Prometheus stores for each metric family type
SERIES_SUFFIXES = {
    "counter": ("_total",), "gauge": ("",), "untyped": ("",), "info": ("_info",),
    "stateset": ("",), "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"), "summary": ("", "_sum", "_count"),
}
METRIC_RE = re.compile(r"\b(steadycast_\w+)")
SELECTOR_RE = re.compile(r"\b(steadycast_\w+)\s*\{([^}]*)\}")
LABEL_RE = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")


def _series(families: Iterable[Metric]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in families:
        labels = {k for s in f.samples for k in s.labels}
        for suffix in SERIES_SUFFIXES[f.type]:
            out[f.name + suffix] = labels
    return out


def exported_series() -> dict[str, set[str]]:
    """Every series name the relay and the encoder export, with its label names."""
    relay = RelayMetrics()
    for m in vars(relay).values():  # one child per labelled metric, so the labels show
        if isinstance(m, MetricWrapperBase):
            names = getattr(m, "_labelnames", ())
            if names:
                m.labels(*["x"] * len(names))
    status = SenderStatus(
        state="live", abr="steady", abr_state="probe", target_kbps=900, sent_kbps=910.0,
        acked_kbps=905.0, effective_fps=30.0, backlog_bytes=4000, backlog_ms=40,
        relay_buffer_ms=5000, srtt_ms=80.0, connections=1, reconnects=0, outages=0,
        outage_s_total=0.0, in_outage_s=None, sent_bytes_total=1, acked_bytes_total=1,
        retransmitted_bytes_total=0, frames_captured=1, frames_encoded=1,
        spool_memory_bytes=0, spool_disk_bytes=0, backfill_pending=False)
    encoder = SenderCollector("demo", lambda: status)
    return {**_series(relay.registry.collect()), **_series(encoder.collect())}


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _queries(dashboard: dict[str, Any]) -> list[str]:
    out = [n["expr"] for n in _walk(dashboard) if isinstance(n.get("expr"), str)]
    for var in dashboard["templating"]["list"]:
        q = var.get("query")
        if var["type"] == "query":
            out.append(q["query"] if isinstance(q, dict) else q)
    return out


def test_grafana_dashboard_names_only_exported_metrics_and_labels() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    series = exported_series()
    assert "steadycast_ingest_bytes_total" in series and "steadycast_encoder_rtt_seconds" in series
    queries = _queries(dashboard)
    assert len(queries) >= 20
    used: set[str] = set()
    for q in queries:
        names = METRIC_RE.findall(q)
        assert names, f"query names no steadycast_ metric: {q}"
        unknown = [n for n in names if n not in series]
        assert not unknown, f"{q}\n  names {unknown}, not exported (see monitor/metrics.py, " \
                            "encoder/metrics.py)"
        for metric, selector in SELECTOR_RE.findall(q):
            bad = set(LABEL_RE.findall(selector)) - series[metric]
            assert not bad, f"{q}\n  {metric} has no label(s) {sorted(bad)}"
        used.update(names)
    for key in ("steadycast_output_source", "steadycast_ingest_bitrate_kbps",
                "steadycast_buffer_seconds", "steadycast_dropouts_total",
                "steadycast_destination_up", "steadycast_encoder_target_bitrate_kbps",
                "steadycast_encoder_backlog_seconds"):
        assert key in used, f"the dashboard does not show {key}"


def test_grafana_dashboard_reads_a_prometheus_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for node in _walk(dashboard):
        ds = node.get("datasource")
        if isinstance(ds, dict) and ds.get("type") == "prometheus":
            assert ds["uid"] == DATASOURCE_UID, node.get("title", node)
    for p in panels:
        assert p["datasource"]["uid"] == DATASOURCE_UID, p["title"]
        assert all(t["datasource"]["uid"] == DATASOURCE_UID for t in p["targets"]), p["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_page_is_package_data() -> None:
    page = importlib.resources.files("relay").joinpath("static", "dashboard.html")
    assert page.is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["relay"]
    assert any(fnmatch.fnmatch("static/dashboard.html", p) for p in patterns), patterns
    text = page.read_text(encoding="utf-8")
    assert 'name="viewport"' in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), \
        "the page loads something from outside the relay"
