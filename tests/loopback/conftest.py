"""Fixtures for tests against the local simulator (127.0.0.1 only)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from loopback_helpers import API_KEY

from pyconvai.sim import AgentScript, SimConfig, Simulator


@pytest.fixture
def make_sim() -> Iterator[Callable[..., Simulator]]:
    """Start simulators with the given agent scripts; all are stopped after the test."""
    started: list[Simulator] = []

    def make(agents: dict[str, AgentScript] | None = None, **config: object) -> Simulator:
        sim = Simulator(SimConfig(api_key=API_KEY, agents=agents or {}, **config))
        sim.start(timeout=5)
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop(timeout=5)
