"""``make bench``: run every benchmark, print the figures, write BENCHMARKS.md.

Environment (defaults: the full issue, about 30 minutes on 2 cores):

  BENCH_QUICK=1               a short run (minutes): fewer calls, levels 1,20,50, 200 soak calls
  BENCH_LEVELS=1,50,100,150,200,400
  BENCH_WINDOW_S=30           steady window at each capacity level
  BENCH_PROFILE_LEVEL=100     py-spy (the asyncio thread, native frames) for 15 s in a run of its own at that level (0: never)
  BENCH_CAPACITY_BUFFER_MS=240  elevenlabs_audio_frames_buffer_ms of the capacity levels (20: 50 chunks/s)
  BENCH_RAMP_RATE=20          calls originated per second
  BENCH_SINGLE_CALLS=6        one-call-at-a-time calls (each BENCH_SINGLE_SECONDS=48)
  BENCH_SOAK_CALLS=2000       soak calls (BENCH_SOAK_CONCURRENCY=10 at a time)
  BENCH_SIP_LEVELS=50           SIP calls from SIPp over PJSIP/RTP, module and floor
  BENCH_PARTS=single,uplink,capacity,sip,soak
  BENCH_NO_FLOOR=1            skip the floor runs (Asterisk without the module)
  BENCH_OUTPUT=BENCHMARKS.md  where the report goes
  BENCH_RAW=path.pickle       also keep the raw readings (for re-rendering: BENCH_RENDER=path.pickle)
  BENCH_SOAK_FROM=path.pickle with BENCH_RENDER: take the soak from that run's raw readings
  BENCH_SOAK_WHY="..."        and say why in BENCHMARKS.md
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from .bed import client_setup_ms, machine_info, moddir, raise_fd_limit, testbed_root
from .report import compute, render, summary_lines
from .scenarios import LIVE, Settings, profile_level, run_level, run_sequential, run_sip_level, run_soak

REPO = Path(__file__).resolve().parents[2]


def settings_from_env() -> Settings:
    cfg = Settings()
    if os.environ.get("BENCH_QUICK"):
        cfg = replace(cfg, single_calls=2, single_seconds=20.0, uplink240_calls=1, levels=(1, 20, 50), profile_level=50,
                      sip_levels=(20,),
                      window_s=10.0, warmup_s=3.0, recorded_per_level=2, soak_calls=200, soak_checkpoint=50)
    env = os.environ.get
    for name, field_name in (("BENCH_LEVELS", "levels"), ("BENCH_SIP_LEVELS", "sip_levels")):
        if env(name):
            cfg = replace(cfg, **{field_name: tuple(int(x) for x in env(name).split(",") if x.strip())})
    for name, field_name, kind in (
        ("BENCH_WINDOW_S", "window_s", float), ("BENCH_RAMP_RATE", "ramp_rate", float),
        ("BENCH_SINGLE_CALLS", "single_calls", int), ("BENCH_SINGLE_SECONDS", "single_seconds", float),
        ("BENCH_SOAK_CALLS", "soak_calls", int), ("BENCH_PROFILE_LEVEL", "profile_level", int),
        ("BENCH_CAPACITY_BUFFER_MS", "capacity_buffer_ms", int), ("BENCH_SOAK_CONCURRENCY", "soak_concurrency", int),
    ):
        if env(name):
            cfg = replace(cfg, **{field_name: kind(env(name))})
    if env("BENCH_NO_FLOOR"):
        cfg = replace(cfg, floor=False)
    return cfg


def source_commit() -> str:
    """The commit the module under test was built from (make bench installs the work tree)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    return commit + (" with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def _draw(raw: dict, output: Path) -> None:
    """The report's PNGs beside it (raw["plots"]: what render() shows); none without matplotlib."""
    try:
        from .plots import draw
    except ImportError:
        return
    try:
        raw["plots"] = draw(compute(raw), output.parent)
    except ImportError as exc:
        print(f"no pictures: {exc} (make bench installs matplotlib)")


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)


def main() -> int:
    render_only = os.environ.get("BENCH_RENDER")
    output = Path(os.environ.get("BENCH_OUTPUT") or REPO / "BENCHMARKS.md")
    if render_only:
        raw = pickle.loads(Path(render_only).read_bytes())
        if os.environ.get("BENCH_SOAK_FROM"):
            soak_raw = pickle.loads(Path(os.environ["BENCH_SOAK_FROM"]).read_bytes())
            raw["soak"], raw["soak_floor"] = soak_raw.get("soak"), soak_raw.get("soak_floor")
            raw["soak_source"] = {"commit": soak_raw.get("commit", "?"), "started": soak_raw["started"],
                                  "why": os.environ.get("BENCH_SOAK_WHY", "")}
        _draw(raw, output)
        output.write_text(render(raw))
        print("\n".join(summary_lines(raw)))
        return 0

    signal.signal(signal.SIGTERM, _terminate)
    cfg = settings_from_env()
    parts = set((os.environ.get("BENCH_PARTS") or "single,uplink,capacity,sip,soak").split(","))
    root = testbed_root()
    mods = moddir(root)
    fd_limit = raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="convai-bench-"))
    began = time.monotonic()
    raw: dict = {"settings": cfg, "machine": machine_info(), "fd_limit": fd_limit, "parts": sorted(parts),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "levels": {}, "sip_levels": {}}

    def log(text: str) -> None:
        print(f"[{time.monotonic() - began:7.1f} s] {text}", flush=True)

    raw["commit"] = source_commit()
    raw["client_setup_ms"] = client_setup_ms(root)
    try:
        if "single" in parts:
            log(f"downlink, barge-in, uplink (buffer 20 ms): {cfg.single_calls} calls of {cfg.single_seconds:g} s, "
                "one at a time")
            raw["single"] = run_sequential(root, mods, work, "single", cfg.single_calls, cfg.single_seconds, 20,
                                           True, log)
        if "uplink" in parts:
            log(f"uplink (buffer 240 ms): {cfg.uplink240_calls} calls of {cfg.uplink240_seconds:g} s, one at a time")
            raw["uplink240"] = run_sequential(root, mods, work, "uplink240", cfg.uplink240_calls,
                                              cfg.uplink240_seconds, 240, False, log)
        for part, levels, run_one, what in (("capacity", cfg.levels, run_level, "calls"),
                                            ("sip", cfg.sip_levels, run_sip_level, "SIPp calls")):
            if part not in parts:
                continue
            for level in levels:
                log(f"{part}: {level} concurrent {what} through the module")
                module = run_one(root, mods, work, level, True, cfg, log)
                if part == "capacity" and level == cfg.profile_level:
                    module.profile = profile_level(root, mods, work, level, cfg, log)
                floor = None
                if cfg.floor:
                    log(f"{part}: {level} concurrent {what} without the module (floor)")
                    floor = run_one(root, mods, work, level, False, cfg, log)
                raw["levels" if part == "capacity" else "sip_levels"][level] = (module, floor)
        if "soak" in parts:
            log(f"soak: {cfg.soak_calls} short calls, {cfg.soak_concurrency} at a time")
            raw["soak"] = run_soak(root, mods, work, cfg, log)
            if cfg.floor:
                log(f"soak without the module (control): {cfg.soak_calls} short calls")
                raw["soak_floor"] = run_soak(root, mods, work, cfg, log, with_module=False)
    finally:
        for run in list(LIVE):
            run.close()
        raw["duration_s"] = time.monotonic() - began
        if os.environ.get("BENCH_RAW"):
            Path(os.environ["BENCH_RAW"]).write_bytes(pickle.dumps(raw))
    log("writing the report")
    _draw(raw, output)
    output.write_text(render(raw))
    shutil.rmtree(work, ignore_errors=True)
    print()
    print("\n".join(summary_lines(raw)))
    print(f"\n{output} written; the bench took {raw['duration_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
