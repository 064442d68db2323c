"""Python virtualenvs with real Nova and its functional-test harness, one per tested release.

Two releases are in the suite: Nova 21.2.4 (Ussuri, the last with ``nova.hooks``; Python 3.8)
and Nova 34.0.0 (2026.2, notifications only; Python 3.12). Neither runs on the suite's own
Python, so each gets a venv of its own, built once from a small ``Release`` description (the
release's upper constraints, its harness's test requirements, an import check) and cached.

Public API:

* ``NOVA_21``, ``NOVA_34`` - the two releases; ``RELEASES`` maps a version to its release.
* ``ensure_nova_venv(progress=print, release=NOVA_21) -> Path`` - build the venv once and
  cache it at ``CACHE_DIR / release.venv_name``; later calls return at once.
* ``install_novahooks(venv, project_dir) -> None`` - install the project (non-editable,
  ``--no-deps``) into that venv, so its ``nova.hooks`` entry points are what Nova loads.
* ``venv_python(venv) -> Path`` - the venv's interpreter.
* ``nova_constraints(venv) -> Path`` - the upper constraints the venv was built with.

Environment overrides: ``NOVAHOOKS_PYTHON38`` / ``NOVAHOOKS_PYTHON312`` (base interpreters),
``NOVAHOOKS_NOVA_CONSTRAINTS`` (the Ussuri upper-constraints file), ``NOVAHOOKS_CACHE`` (via
CACHE_DIR).
"""

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from tests.servers.base import CACHE_DIR, ServerError, find_python

MARKER = ".novahooks-nova-venv-complete"

_HARNESS_TEST_REQUIREMENTS = ("fixtures", "testtools", "oslotest", "requests-mock",
                              "wsgi-intercept", "stestr", "ddt", "testscenarios",
                              "testresources", "osprofiler")


@dataclass(frozen=True)
class Release:
    """What differs between the Nova releases the suite runs: the rest of a build is shared."""

    version: str
    python: str                   # "3.12": found on PATH or through pyenv
    python_override: str          # environment variable naming the base interpreter
    constraints: str              # vendored upper-constraints file beside this module
    packages: Tuple[str, ...]
    import_check: str             # modules that must import once the venv is built
    constraints_override: str = ""

    @property
    def venv_name(self) -> str:
        return "nova-%s-py%s" % (self.version, self.python.replace(".", ""))


NOVA_21 = Release(
    version="21.2.4", python="3.8", python_override="NOVAHOOKS_PYTHON38",
    constraints="nova-ussuri-upper-constraints.txt",
    constraints_override="NOVAHOOKS_NOVA_CONSTRAINTS",
    packages=("nova==21.2.4", "openstack-placement>=3.0,<4", "mock")
    + _HARNESS_TEST_REQUIREMENTS,
    import_check="import nova.hooks, nova.tests.functional.integrated_helpers")

NOVA_34 = Release(
    version="34.0.0", python="3.12", python_override="NOVAHOOKS_PYTHON312",
    constraints="nova-2026.2-upper-constraints.txt",
    packages=("nova==34.0.0", "openstack-placement==16.0.0", "python-barbicanclient")
    + _HARNESS_TEST_REQUIREMENTS,
    import_check="import nova.tests.functional.integrated_helpers, oslo_messaging")

RELEASES = {release.version: release for release in (NOVA_21, NOVA_34)}

# Never copied into the throwaway build tree that pip installs the project from.
_PROJECT_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", ".mypy_cache", ".tox", "node_modules", "*.pyc")

Progress = Callable[[str], None]


def venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def nova_constraints(venv: Path) -> Path:
    """The constraints file (the release's upper constraints without a ``nova===`` pin).

    It keeps the vendored file's name, so each venv has exactly one ``*upper-constraints.txt``.
    """
    found = sorted(Path(venv).glob("*upper-constraints.txt"))
    if len(found) != 1:
        raise ServerError("expected one upper-constraints file in %s, found %s" % (venv, found))
    return found[0]


def _find_constraints(release: Release) -> Path:
    candidates: List[Path] = []
    if release.constraints_override and os.environ.get(release.constraints_override):
        candidates.append(Path(os.environ[release.constraints_override]))
    candidates.append(Path(__file__).resolve().parent / release.constraints)
    for cand in candidates:
        if cand.is_file():
            return cand
    raise ServerError("upper constraints for Nova %s not found (tried %s)" % (
        release.version, ", ".join(map(str, candidates))))


def _constraints_text(src: Path) -> str:
    """The upper constraints without the ``nova===`` line (it would fight ``nova==X``)."""
    lines = src.read_text().splitlines()
    kept = [line for line in lines if not re.match(r"^\s*nova\s*===", line)]
    return "\n".join(kept) + "\n"


def _run(argv: List[str], what: str, log: Optional[Path] = None,
         env: Optional[Dict[str, str]] = None, timeout: float = 1800) -> str:
    full_env = dict(os.environ)
    # The caller's venv/pip settings must not leak into Nova's venv.
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV"):
        full_env.pop(key, None)
    full_env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    full_env.update(env or {})
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=full_env, timeout=timeout)
    if log is not None:
        with open(log, "a") as fh:
            fh.write("$ %s\n%s\n" % (" ".join(argv), proc.stdout))
    if proc.returncode != 0:
        raise ServerError("%s failed (exit %d): %s\n%s" % (
            what, proc.returncode, " ".join(argv), proc.stdout[-4000:]))
    return proc.stdout


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _relocate(tmp: Path, final: Path) -> None:
    """Point bin/ (script shebangs, activate*) at where the build directory will be renamed to."""
    old, new = str(tmp).encode(), str(final).encode()
    for entry in (tmp / "bin").iterdir():
        if entry.is_symlink() or not entry.is_file():
            continue
        data = entry.read_bytes()
        if old in data:
            mode = entry.stat().st_mode
            entry.write_bytes(data.replace(old, new))
            os.chmod(entry, mode)


def _copy_api_paste(venv: Path, release: Release) -> None:
    """The harness reads ``<site-packages>/etc/nova/api-paste.ini``; pip puts it in <venv>/etc."""
    src = venv / "etc" / "nova" / "api-paste.ini"
    if not src.is_file():
        raise ServerError("%s missing after installing nova" % src)
    site = venv / "lib" / ("python" + release.python) / "site-packages"
    dest = site / "etc" / "nova" / "api-paste.ini"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)


def _pip_check(venv: Path) -> List[str]:
    """The problems ``pip check`` reports (empty when all requirements are met)."""
    proc = subprocess.run([str(venv_python(venv)), "-m", "pip", "check"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    if proc.returncode == 0:
        return []
    return sorted(line for line in proc.stdout.splitlines() if line.strip())


def _freeze(venv: Path) -> Dict[str, str]:
    out = _run([str(venv_python(venv)), "-m", "pip", "freeze", "--all"], "pip freeze")
    pins = {}
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if " @ " in line:                       # name @ file:///... (a local or URL install)
            name, _, version = line.partition(" @ ")
        elif "==" in line:
            name, _, version = line.partition("==")
        else:
            name, version = line, ""
        pins[re.sub(r"[-_.]+", "-", name).lower().strip()] = version.strip()
    return pins


def _build(release: Release, tmp: Path, log: Path, progress: Progress) -> Dict[str, object]:
    """Create the venv in ``tmp``; what the marker records about the build."""
    python = find_python(release.python, release.python_override)
    constraints_src = _find_constraints(release)
    progress("building Nova %s venv with %s in %s (log: %s)"
             % (release.version, python, tmp, log))
    _run([python, "-m", "venv", str(tmp)], "python%s -m venv" % release.python, log)
    constraints = tmp / release.constraints
    constraints.write_text(_constraints_text(constraints_src))
    progress("pip install nova==%s and the test harness (a few minutes)" % release.version)
    _run([str(venv_python(tmp)), "-m", "pip", "install", "-c", str(constraints)]
         + list(release.packages), "pip install nova", log)
    _copy_api_paste(tmp, release)
    _run([str(venv_python(tmp)), "-c", release.import_check], "importing nova's harness", log)
    return {
        "nova": release.version,
        "python": python,
        "constraints": str(constraints_src),
        "constraints_sha256": hashlib.sha256(constraints.read_bytes()).hexdigest(),
    }


def ensure_nova_venv(progress: Progress = print, release: Release = NOVA_21) -> Path:
    """Build (once) and return the venv with ``release``'s Nova and its test harness."""
    final = CACHE_DIR / release.venv_name
    if (final / MARKER).is_file():
        return final
    with _lock(CACHE_DIR / (release.venv_name + ".lock")):
        if (final / MARKER).is_file():          # built by someone else while we waited
            return final
        if final.exists():                      # an incomplete leftover: start again
            shutil.rmtree(final)
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=release.venv_name + ".build-", dir=str(CACHE_DIR)))
        log = CACHE_DIR / (release.venv_name + ".build.log")
        log.write_text("")
        try:
            facts = _build(release, tmp, log, progress)
            elapsed = time.monotonic() - started
            facts["build_seconds"] = round(elapsed, 1)
            (tmp / MARKER).write_text(json.dumps(facts, indent=2) + "\n")
            _relocate(tmp, final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if final.exists() and not (final / MARKER).is_file():
                shutil.rmtree(final, ignore_errors=True)
            raise
        progress("Nova %s venv ready at %s after %.0f s" % (release.version, final, elapsed))
        return final


def install_novahooks(venv: Path, project_dir: Path) -> None:
    """Install ``project_dir`` (non-editable, no dependencies) into the Nova venv.

    The project is copied to a temporary directory first, so pip's in-tree build leaves no
    ``build/`` or ``*.egg-info`` in the work tree. The pinned packages must not move: this is
    checked by comparing ``pip freeze --all`` before and after, and by ``pip check``.
    """
    venv, project_dir = Path(venv), Path(project_dir)
    python = str(venv_python(venv))
    constraints = nova_constraints(venv)
    with _lock(Path(str(venv) + ".lock")):
        before = _freeze(venv)
        problems_before = _pip_check(venv)
        with tempfile.TemporaryDirectory(prefix="novahooks-src-") as tmp:
            src = Path(tmp) / project_dir.name
            shutil.copytree(str(project_dir), str(src), ignore=_PROJECT_IGNORE)
            _run([python, "-m", "pip", "install", "--no-deps", "--force-reinstall",
                  "--no-cache-dir", "-c", str(constraints), str(src)],
                 "pip install novahooks into the Nova venv")
        after = _freeze(venv)
        before.pop("novahooks", None)
        after.pop("novahooks", None)
        if before != after:
            changed = sorted(set(before.items()) ^ set(after.items()))
            raise ServerError("installing novahooks changed pinned packages: %s" % changed)
        new_problems = sorted(set(_pip_check(venv)) - set(problems_before))
        if new_problems:
            raise ServerError("pip check after installing novahooks: %s" % new_problems)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="build a cached Nova venv for the suite")
    parser.add_argument("--release", choices=sorted(RELEASES), default=NOVA_21.version)
    chosen = RELEASES[parser.parse_args().release]
    ensure_nova_venv(lambda line: print(line, flush=True), chosen)
