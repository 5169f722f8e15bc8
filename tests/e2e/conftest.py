"""Fixtures that give each end-to-end test a real Asterisk 22 with the module.

``make test`` prepares the test bed and exports CONVAI_TESTBED_ROOT: the sid
root path, or an empty string for the machine's own Asterisk. Run outside
``make test`` (variable unset), these tests are skipped with that hint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pyconvai.sim import SimConfig, Simulator
from tests.e2e.asterisk import Asterisk
from tests.e2e.calls import API_KEY, CallBed, agents_conf, dialplan

pytestmark = pytest.mark.e2e


def _testbed_root() -> Path | None:
    value = os.environ.get("CONVAI_TESTBED_ROOT")
    if value is None:
        return None
    return Path(value) if value else Path("/")


@pytest.fixture(scope="session")
def testbed_root() -> Path:
    root = _testbed_root()
    if root is None:
        pytest.skip("end-to-end tests need a prepared Asterisk: run 'make test'")
    if root != Path("/"):
        proc = root / "proc"
        if not os.path.ismount(proc):
            subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    return root


@pytest.fixture(scope="session")
def moddir(testbed_root: Path) -> str:
    """The module directory of the Asterisk under test (where make install put us)."""
    prefix = [] if testbed_root == Path("/") else ["chroot", str(testbed_root)]
    conf = subprocess.run(
        prefix + ["sh", "-c", "sed -n 's/^[[:space:]]*astmoddir[[:space:]]*=>*[[:space:]]*//p' /etc/asterisk/asterisk.conf"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return conf or "/usr/lib/asterisk/modules"


@pytest.fixture
def make_asterisk(testbed_root: Path, moddir: str):
    """Factory: ``make_asterisk(configs={...}, modules=[...])`` returns a started Asterisk."""
    started: list[Asterisk] = []

    def factory(configs: dict[str, str] | None = None, modules: list[str] | None = None, start: bool = True,
                env: dict[str, str] | None = None) -> Asterisk:
        ast = Asterisk(testbed_root, moddir, modules=modules)
        for name, text in (configs or {}).items():
            ast.write_config(name, text)
        started.append(ast)
        if start:
            ast.start(env=env)
        return ast

    yield factory
    reports = []
    for ast in started:
        ast.stop()
        reports += ast.sanitizer_reports()
        ast.cleanup()
    assert not reports, "AddressSanitizer:\n" + "\n".join(reports)[:20000]


@pytest.fixture
def sim():
    """The simulator; call_bed() sets its agent scripts."""
    simulator = Simulator(SimConfig(api_key=API_KEY))
    yield simulator
    simulator.stop()


@pytest.fixture
def call_bed(make_asterisk, sim):
    """Factory: an Asterisk with agents pointed at the simulator, the e2e dialplan and AMI.

    ``call_bed(agents, scripts, extra_dialplan="", general=None, env=None, modules=None, configs=None,
    tls=None)``; "{sim_ws}" in a value is the simulator's ws://host:port (the other providers'
    sockets); ``tls``: (certificate, key) PEM paths: the simulator serves https/wss with them,
    and Asterisk trusts that certificate (SSL_CERT_FILE), as it would a real CA's.
    """

    def factory(agents, scripts, extra_dialplan="", general=None, env=None, modules=None, configs=None,
                tls=None) -> CallBed:
        cert, key = tls or (None, None)
        sim.config = SimConfig(api_key=API_KEY, agents=scripts, tls_cert=cert, tls_key=key)
        sim.start()
        ast = make_asterisk(configs, modules=modules, start=False)
        if cert is not None:
            trusted = ast.path("etc") + "/trusted-ca.pem"
            shutil.copy(cert, ast.host_path(trusted))
            env = {**(env or {}), "SSL_CERT_FILE": trusted}
        conf = agents_conf(sim.signed_url_endpoint, agents, general, ast.path("etc"))
        ast.write_config("elevenlabs.conf", conf.replace("{sim_ws}", f"ws://127.0.0.1:{sim.port}"))
        extra = extra_dialplan.replace("${SOUNDS}", ast.path("sounds"))
        ast.write_config("extensions.conf", dialplan(ast.path("rec"), ast.path("sounds"), extra))
        ast.start(env=env)
        return CallBed(ast, ast.ami())

    return factory
