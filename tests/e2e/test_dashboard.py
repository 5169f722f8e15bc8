"""contrib/grafana's dashboard against the metrics a real Asterisk exports.

Every query of the dashboard may only name metrics, labels and status values that
``elevenlabs show metrics`` (what res_prometheus serves) prints after a call, plus the
labels Prometheus itself adds when it scrapes (instance, job).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pyconvai.sim import AgentScript

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "app_elevenlabs_convai.json"
SCRAPE_LABELS = {"instance", "job"}
METRIC = re.compile(r"\b(asterisk_elevenlabs_\w+)(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def exported(text: str) -> tuple[dict[str, set[str]], dict[tuple[str, str], set[str]]]:
    """Series names (histograms as _bucket/_sum/_count) with their label names, and the
    values seen per (series, label)."""
    kinds = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    labels: dict[str, set[str]] = {}
    for name, kind in kinds.items():
        for series in ([f"{name}_bucket", f"{name}_sum", f"{name}_count"] if kind == "histogram" else [name]):
            labels[series] = set()
    values: dict[tuple[str, str], set[str]] = {}
    for line in text.splitlines():
        found = re.match(r"^(\w+)(?:\{(.*)\})? \S+$", line)
        if not found or found.group(1) not in labels:
            continue
        for label, _, value in MATCHER.findall(found.group(2) or ""):
            labels[found.group(1)].add(label)
            values.setdefault((found.group(1), label), set()).add(value)
    return labels, values


def test_the_grafana_dashboard_asks_only_for_what_the_module_exports(call_bed):
    bed = call_bed({"greeter": {"elevenlabs_agent_id": "agent_barge", "elevenlabs_audio_frames_buffer_ms": 20}},
                   {"agent_barge": AgentScript(output_format="ulaw_8000", input_format="ulaw_8000", greeting_ms=4000,
                                               reply_ms=500, vad_scores=True)})
    bed.call("greeter", "talk-d1-1-speak1k-1")
    assert bed.result()["Status"] == "CALLER_HANGUP"
    bed.wait_idle()
    labels, values = exported(bed.ast.cli("elevenlabs show metrics"))
    assert "asterisk_elevenlabs_downlink_latency_seconds_bucket" in labels  # the runtime's part is there

    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            for name in re.findall(r"\$(\w+)", expr):
                assert name in variables or name.startswith("__"), (panel["title"], name)
            names = METRIC.findall(expr)
            assert names, (panel["title"], expr)
            for series, selector in names:
                assert series in labels, f"{panel['title']}: {series} is not exported"
                used.add(series)
                for label, _, value in MATCHER.findall(selector):
                    if label in SCRAPE_LABELS:
                        continue
                    assert label in labels[series], f"{panel['title']}: {series} has no label {label}"
                    for alternative in value.split("|"):
                        assert alternative in values[(series, label)], f"{panel['title']}: {label}={alternative}?"
            for grouping in GROUPING.findall(expr):
                for label in (item.strip() for item in grouping.split(",")):
                    known = SCRAPE_LABELS | {"le"} | set().union(*(labels[s] for s, _ in names))
                    assert label in known, f"{panel['title']}: grouping by unknown label {label}"
    # Every counter and gauge the module exports has a panel (the histograms' _sum needs none).
    wanted = {s for s in labels if not s.endswith(("_sum", "_count"))}
    assert wanted <= used, f"exported but not on the dashboard: {sorted(wanted - used)}"
