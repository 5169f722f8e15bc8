"""The bench's pictures, written beside BENCHMARKS.md: latency distributions, pacing, the
capacity curve (module against the floor, CPU and RSS against calls).

Drawn from the same computed figures as the tables (report.compute), with matplotlib's
non-interactive backend; nothing here measures anything.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

CAPACITY = "benchmarks-capacity.png"
LATENCY = "benchmarks-latency.png"
PACING = "benchmarks-pacing.png"


def draw(out: dict, directory: Path) -> list[tuple[str, str]]:
    """Write the PNGs the figures allow; returns (file name, caption) for each written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, caption, plot in ((CAPACITY, "Capacity: Asterisk's CPU and RSS against concurrent calls, "
                                 "with the module and without it (the floor), same run", _capacity),
                                (LATENCY, "Latency distributions (cumulative): downlink, barge-in, uplink", _latency),
                                (PACING, "Pacing: intervals between frames written while agent audio plays", _pacing)):
        figure = plot(plt, out)
        if figure is None:
            continue
        figure.savefig(directory / name, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append((name, caption))
    return written


def _series(levels, key: str, side: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for lv in levels:
        value = getattr(lv, side).get(key)
        if value is not None:
            xs.append(lv.level)
            ys.append(value)
    return xs, ys


def _capacity(plt, out: dict):
    levels = out["levels"]
    if not levels:
        return None
    figure, (cpu, rss) = plt.subplots(1, 2, figsize=(11, 4))
    for side, label, style in (("mod", "with the module", "o-"), ("flo", "floor (no module)", "s--")):
        cpu.plot(*_series(levels, "cpu", side), style, label=label)
        rss.plot(*_series(levels, "rss_mib", side), style, label=label)
    for lv in out.get("sip_levels", []):
        for side, marker in (("mod", "^"), ("flo", "v")):
            if lv.__dict__[side].get("cpu") is not None:
                cpu.plot([lv.level], [lv.__dict__[side]["cpu"]], marker, color="grey",
                         label=f"SIP, {'module' if side == 'mod' else 'floor'}")
    cpu.set(xlabel="concurrent calls", ylabel="Asterisk CPU, % of one core", title="CPU")
    rss.set(xlabel="concurrent calls", ylabel="Asterisk RSS, MiB", title="Memory")
    for axis in (cpu, rss):
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    return figure


def _cdf(axis, values: list[float], label: str) -> None:
    if not values:
        return
    data = np.sort(np.asarray(values, dtype=float))
    axis.step(data, np.arange(1, len(data) + 1) / len(data), where="post", label=f"{label} (n={len(data)})")


def _runs(out: dict):
    runs = []
    if out.get("single") is not None:
        runs.append(("1 call", out["single"]))
    runs += [(f"{lv.level} calls", lv.lat) for lv in out["levels"] if lv.lat is not None and lv.level > 1]
    return runs


def _latency(plt, out: dict):
    runs = _runs(out)
    if not runs:
        return None
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for axis, key, title in zip(axes, ("downlink", "barge_in", "uplink"),
                                ("Downlink: agent audio sent → first frame written",
                                 "Barge-in: interruption → last old frame written",
                                 "Uplink: caller frame read → agent received it")):
        for label, lat in runs:
            _cdf(axis, lat.samples.get(key, []), label)
        axis.set_xscale("symlog", linthresh=0.1)
        axis.set_xlim(left=0)
        axis.set(xlabel="ms (symmetric log scale; 0 = none)", ylabel="share of samples", title=title, ylim=(0, 1.02))
        axis.title.set_fontsize("small")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="x-small")
    return figure


def _pacing(plt, out: dict):
    runs = [(label, lat.intervals) for label, lat in _runs(out) if sum(lat.intervals.values())]
    if not runs:
        return None
    figure, axis = plt.subplots(figsize=(8, 4))
    edges = list(range(15, 26))
    width = 0.8 / len(runs)
    for i, (label, intervals) in enumerate(runs):
        total = sum(intervals.values())
        shares = [_bucket(intervals, ms, edges) / total for ms in ["<15", *edges, ">25"]]
        axis.bar(np.arange(len(shares)) + i * width, shares, width, label=label)
    axis.set_xticks(np.arange(len(edges) + 2) + 0.4 - width / 2, ["<15", *map(str, edges), ">25"])
    axis.set(yscale="log", xlabel="interval between consecutive frames, ms", ylabel="share of intervals (log)")
    axis.grid(alpha=0.3, axis="y")
    axis.legend(fontsize="small")
    return figure


def _bucket(intervals: Counter, ms, edges: list[int]) -> int:
    if ms == "<15":
        return sum(n for k, n in intervals.items() if k < edges[0])
    if ms == ">25":
        return sum(n for k, n in intervals.items() if k > edges[-1])
    return intervals.get(ms, 0)
