"""The Debian package (``make deb``, debian/): built, installed with apt, a call, removed.

Nothing here writes into the test-bed root, which other test runs share: the package is
built in one overlay of it (the .deb kept per source hash in CACHE, with lintian's verdict),
and installed into another, fresh overlay, from which the source-installed module, its
documentation, its venv and elevenlabs.conf are removed first. apt takes the package's
dependencies (python3-websockets, ...) from the Debian mirror; pip is never run. The call
uses the package's own elevenlabs.conf, whose python_venv is unset: the system Python.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import pytest

from pyconvai.sim import AgentScript, SimConfig
from tests.e2e.asterisk import MODULES, Asterisk
from tests.e2e.calls import API_KEY, CallBed, agents_conf, dialplan, tone_frames

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCRATCH = Path("/var/cache/app_elevenlabs_convai")
CACHE = SCRATCH / "deb-cache"
KEEP_BUILDS = 3
PACKAGE = "asterisk-elevenlabs-convai"
MODULE = "app_elevenlabs_convai.so"
DOC = "/usr/share/asterisk/documentation/thirdparty/app_elevenlabs_convai-en_US.xml"
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
# What the package is built from (README.md: the wheel's metadata); make deb copies more.
INPUTS = ["Makefile", "README.md", "csrc", "debian", "elevenlabs.conf.example", "pyconvai", "pyproject.toml",
          "setup.py"]
EXCLUDES = ["./.git", "./.venv", "./build", "./out", "__pycache__", "./pyconvai/_ring*", "*.egg-info",
            "./.pytest_cache", "./.hypothesis"]
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "PIP_NO_INDEX": "1"}
SCRIPTS = {"agent_greeting": AgentScript(output_format="ulaw_8000", input_format="ulaw_8000", greeting_ms=3000)}


class Overlay:
    """An overlay of the test-bed root (its own upper layer, /proc mounted), run with chroot."""

    def __init__(self, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"deb-test-{name}-", dir=SCRATCH))
        self.merged = self.dir / "merged"
        self.mounts: list[Path] = []

    def mount(self, lower: Path) -> None:
        for sub in ("upper", "work", "merged"):
            (self.dir / sub).mkdir()
        self._mount(["-t", "overlay", "overlay", "-o",
                     f"lowerdir={lower},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}"], self.merged)
        self._mount(["-t", "proc", "proc"], self.merged / "proc")

    def _mount(self, args: list[str], target: Path) -> None:
        subprocess.run(["mount", *args, str(target)], check=True)
        self.mounts.append(target)

    def path(self, inside: str) -> Path:
        return self.merged / inside.lstrip("/")

    def run(self, command: str, timeout: float, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        """``command`` (sh) inside; the output is in the failure's message."""
        result = subprocess.run(["chroot", str(self.merged), "sh", "-c", command], capture_output=True, text=True,
                                timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
        if check and result.returncode:
            output = (result.stdout + result.stderr)[-5000:]
            raise AssertionError(f"{command!r} failed ({result.returncode}):\n{output}")
        return result

    def close(self) -> None:
        """Stop whatever still runs in here (this test's processes), unmount, delete. Idempotent."""
        if not self.dir.exists():
            return
        for pid in self._processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self._processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        while self.mounts:
            target = self.mounts.pop()
            if subprocess.run(["umount", str(target)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(target)], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _processes(self) -> list[int]:
        """Processes whose root is this overlay: only ours can be (the directory is new)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/root") == str(self.merged):
                    found.append(int(entry))
            except OSError:
                pass
        return found


@pytest.fixture
def overlays(testbed_root: Path):
    """Factory: ``overlays(name)`` mounts a fresh overlay; all are unmounted at the end, pass or fail."""
    if testbed_root == Path("/"):
        pytest.skip("the package test installs into an overlay of the sid test bed, not into this machine")
    made: list[Overlay] = []

    def factory(name: str) -> Overlay:
        made.append(Overlay(name))
        made[-1].mount(testbed_root)
        return made[-1]

    yield factory
    for overlay in reversed(made):
        overlay.close()


def source_hash() -> str:
    digest = hashlib.sha256()
    for name in INPUTS:
        top = REPO / name
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            relative = path.relative_to(REPO).as_posix()
            if "__pycache__" in relative or path.name.startswith("_ring") or path.suffix in (".pyc", ".so"):
                continue
            digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def built_package(overlays) -> Path:
    """The .deb of these sources: from CACHE, or built by make deb in an overlay (then lintian)."""
    cached = CACHE / source_hash()
    debs = sorted(cached.glob(f"{PACKAGE}_*.deb"))
    if debs:
        return debs[0]
    build = overlays("build")
    src = "/usr/src/" + PACKAGE
    build.path(src).mkdir(parents=True)
    subprocess.run(f"tar -C {REPO} {' '.join(f'--exclude={e!r}' for e in EXCLUDES)} -cf - . "
                   f"| tar -C {build.path(src)} -xf -", shell=True, check=True)
    build.run(f"cd {src} && apt-get install -y -qq --no-install-recommends lintian && apt-get build-dep -y -qq ./",
              timeout=600, env=APT_ENV)
    build.run(f"cd {src} && make deb", timeout=600)
    lintian = build.run(f"cd {src} && lintian --fail-on error,warning build/deb/*.changes", timeout=300, check=False)
    assert lintian.returncode == 0, "lintian:\n" + lintian.stdout + lintian.stderr
    (deb,) = build.path(src + "/build/deb").glob(f"{PACKAGE}_*.deb")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=cached.name + ".", dir=CACHE))
    shutil.copy(deb, partial)
    (partial / "lintian.txt").write_text(lintian.stdout)
    build.close()
    try:
        partial.rename(cached)  # whole or not at all; a concurrent run may have won
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    for old in sorted(CACHE.iterdir(), key=lambda path: path.stat().st_mtime)[:-KEEP_BUILDS]:
        shutil.rmtree(old, ignore_errors=True)
    return cached / deb.name


def fresh_root(overlays) -> Overlay:
    """Debian's Asterisk with nothing of this project: what make install put in the root goes."""
    root = overlays("install")
    moddir = astmoddir(root)
    for inside in (f"{moddir}/{MODULE}", DOC, "/opt/app_elevenlabs_convai", "/etc/asterisk/elevenlabs.conf",
                   "/usr/src/app_elevenlabs_convai"):
        path = root.path(inside)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    assert root.run("python3 -c 'import pyconvai'", timeout=30, check=False).returncode != 0
    return root


def astmoddir(root: Overlay) -> str:
    """The module directory Debian's asterisk.conf names."""
    found = re.search(r"^\s*astmoddir\s*=>?\s*(\S+)", root.path("/etc/asterisk/asterisk.conf").read_text(), re.M)
    assert found, "no astmoddir in Debian's asterisk.conf"
    return found.group(1)


def module_errors(ast: Asterisk) -> list[str]:
    """Errors and warnings of the loader, the module or its Python. The sandbox lacks most
    configuration files (cdr.conf, ...): the errors about those are every boot's."""
    return [line for line in ast.log_text().splitlines() if re.search(r" (ERROR|WARNING)\[", line)
            and re.search(r"loader\.c|elevenlabs|convai|python", line, re.I)]


def test_package_installs_runs_a_call_with_the_system_python_and_removes_cleanly(overlays, sim):
    deb = built_package(overlays)
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert deb.name.startswith(f"{PACKAGE}_{version}_"), "debian/changelog and pyproject.toml disagree"
    root = fresh_root(overlays)
    moddir = astmoddir(root)
    shutil.copy(deb, root.path("/tmp"))
    root.run(f"apt-get install -y -qq /tmp/{deb.name}", timeout=600, env=APT_ENV)

    installed = root.run(f"dpkg -L {PACKAGE}", timeout=30).stdout.split()
    assert {f"{moddir}/{MODULE}", DOC, "/etc/asterisk/elevenlabs.conf"} <= set(installed)
    assert any(re.fullmatch(rf"{DIST_PACKAGES}/pyconvai/_ring\..*\.so", path) for path in installed)
    assert oct(root.path("/etc/asterisk/elevenlabs.conf").stat().st_mode & 0o777) == "0o640"
    conffile = root.path("/etc/asterisk/elevenlabs.conf").read_text()
    assert not re.search(r"^\s*python_venv\s*=\s*\S", conffile, re.M), "the package's python_venv must be empty"

    # The package's elevenlabs.conf as installed, with agents that call the simulator after it.
    sim.config = SimConfig(api_key=API_KEY, agents=SCRIPTS)
    sim.start()
    ast = Asterisk(root.merged, moddir)
    agents = agents_conf(sim.signed_url_endpoint, {"greeter": {"elevenlabs_agent_id": "agent_greeting"}})
    ast.write_config("elevenlabs.conf", conffile + "\n" + agents.removeprefix("[general]\n"))
    ast.write_config("extensions.conf", dialplan(ast.path("rec"), ast.path("sounds")))
    ami = None
    try:
        ast.start()
        runtime = ast.cli("elevenlabs show runtime")
        assert "Runtime:         running" in runtime, runtime
        assert re.search(r"^Prefix:\s+/usr$", runtime, re.M) and "Virtual env:     no" in runtime, runtime
        assert "Configured venv: none, the system Python (/usr)" in runtime, runtime
        assert "ElevenLabs Python runtime started from /usr" in ast.log_text()
        bed = CallBed(ast, ami := ast.ami())
        bed.call("greeter", "caller-p1-5")
        result = bed.result()
        samples, rate = bed.heard("p1")
        span = tone_frames(samples, rate, 440.0)
        assert abs(span.frames - 150) <= 1 and span.gaps == 0, f"greeting heard for {span.frames * 20} ms"
        assert result["Status"] == "CALLER_HANGUP"
        assert not module_errors(ast), "\n".join(module_errors(ast))
    finally:
        if ami is not None:
            ami.close()
        stopped = ast.stop()
    assert stopped == 0

    root.run(f"apt-get remove -y -qq {PACKAGE}", timeout=300, env=APT_ENV)
    for inside in (f"{moddir}/{MODULE}", DOC, f"{DIST_PACKAGES}/pyconvai"):
        assert not root.path(inside).exists(), f"{inside} left behind"
    assert root.path("/etc/asterisk/elevenlabs.conf").exists()  # a conffile stays until purge

    ast = Asterisk(root.merged, moddir, modules=[m for m in MODULES if m != MODULE])
    try:
        ast.start()  # returns once fully booted
        assert "0 modules loaded" in ast.cli("module show like elevenlabs")
        assert not module_errors(ast), "\n".join(module_errors(ast))
    finally:
        stopped = ast.stop()
    assert stopped == 0
