"""A Python 3.8 virtualenv with real Nova 21.2.4 (Ussuri) and its functional-test harness.

Nova 21.x is the last release that still has ``nova.hooks``; it runs on Python 3.6-3.8 only,
so the test suite (Python 3.11) drives it in a separate interpreter (see ``boot_servers.py``).

Public API:

* ``ensure_nova_venv(progress=print) -> Path`` - build the venv once and cache it at
  ``CACHE_DIR / "nova-21.2.4-py38"``; later calls return at once.
* ``install_novahooks(venv, project_dir) -> None`` - install the project (non-editable,
  ``--no-deps``) into that venv, so its ``nova.hooks`` entry points are what Nova loads.
* ``venv_python(venv) -> Path`` - the venv's interpreter.
* ``nova_constraints(venv) -> Path`` - the Ussuri upper constraints the venv was built with.

Environment overrides: ``NOVAHOOKS_PYTHON38`` (the base interpreter),
``NOVAHOOKS_NOVA_CONSTRAINTS`` (the upper-constraints file), ``NOVAHOOKS_CACHE`` (via CACHE_DIR).
"""

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
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

from tests.servers.base import CACHE_DIR, ServerError, find_python

NOVA_VERSION = "21.2.4"
VENV_NAME = "nova-%s-py38" % NOVA_VERSION
MARKER = ".novahooks-nova-venv-complete"
CONSTRAINTS_NAME = "nova-ussuri-upper-constraints.txt"

PACKAGES = [
    "nova==%s" % NOVA_VERSION,
    "openstack-placement>=3.0,<4",
    "fixtures", "testtools", "oslotest", "mock", "requests-mock", "wsgi-intercept",
    "stestr", "ddt", "testscenarios", "testresources", "osprofiler",
]

# Never copied into the throwaway build tree that pip installs the project from.
_PROJECT_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", ".mypy_cache", ".tox", "node_modules", "*.pyc")

Progress = Callable[[str], None]


def venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def nova_constraints(venv: Path) -> Path:
    """The constraints file (Ussuri upper constraints without a ``nova===`` pin) in the venv."""
    return Path(venv) / CONSTRAINTS_NAME


def _find_python38() -> str:
    return find_python("3.8", "NOVAHOOKS_PYTHON38")


def _find_constraints() -> Path:
    here = Path(__file__).resolve()
    candidates: List[Path] = []
    if os.environ.get("NOVAHOOKS_NOVA_CONSTRAINTS"):
        candidates.append(Path(os.environ["NOVAHOOKS_NOVA_CONSTRAINTS"]))
    candidates += [
        here.parent / CONSTRAINTS_NAME,                    # vendored beside this file
    ]
    for cand in candidates:
        if cand.is_file():
            return cand
    raise ServerError("Ussuri upper constraints not found (tried %s); set "
                      "NOVAHOOKS_NOVA_CONSTRAINTS" % ", ".join(map(str, candidates)))


def _constraints_text(src: Path) -> str:
    """The upper constraints without the ``nova===`` line (it would fight ``nova==21.2.4``)."""
    lines = src.read_text().splitlines()
    kept = [line for line in lines if not re.match(r"^\s*nova\s*===", line)]
    return "\n".join(kept) + "\n"


def _run(argv: List[str], what: str, log: Optional[Path] = None,
         env: Optional[Dict[str, str]] = None, timeout: float = 1800) -> str:
    full_env = dict(os.environ)
    # The caller's venv/pip settings must not leak into the Python 3.8 venv.
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


def _copy_api_paste(venv: Path) -> None:
    """The harness reads ``<site-packages>/etc/nova/api-paste.ini``; pip puts it in <venv>/etc."""
    src = venv / "etc" / "nova" / "api-paste.ini"
    if not src.is_file():
        raise ServerError("%s missing after installing nova" % src)
    site = venv / "lib" / "python3.8" / "site-packages"
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


def ensure_nova_venv(progress: Progress = print) -> Path:
    """Build (once) and return the Python 3.8 venv with Nova 21.2.4 and its test harness."""
    final = CACHE_DIR / VENV_NAME
    if (final / MARKER).is_file():
        return final
    with _lock(CACHE_DIR / (VENV_NAME + ".lock")):
        if (final / MARKER).is_file():          # built by someone else while we waited
            return final
        if final.exists():                      # an incomplete leftover: start again
            shutil.rmtree(final)
        python38 = _find_python38()
        constraints_src = _find_constraints()
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=VENV_NAME + ".build-", dir=str(CACHE_DIR)))
        log = CACHE_DIR / (VENV_NAME + ".build.log")
        log.write_text("")
        try:
            progress("building Nova %s venv with %s in %s (log: %s)"
                     % (NOVA_VERSION, python38, tmp, log))
            _run([python38, "-m", "venv", str(tmp)], "python3.8 -m venv", log)
            constraints = nova_constraints(tmp)
            constraints.write_text(_constraints_text(constraints_src))
            progress("pip install nova==%s and the test harness (a few minutes)" % NOVA_VERSION)
            _run([str(venv_python(tmp)), "-m", "pip", "install", "-c", str(constraints)]
                 + PACKAGES, "pip install nova", log)
            _copy_api_paste(tmp)
            _run([str(venv_python(tmp)), "-c",
                  "import nova.hooks, nova.tests.functional.integrated_helpers"],
                 "importing nova's harness", log)
            elapsed = time.monotonic() - started
            (tmp / MARKER).write_text(json.dumps({
                "nova": NOVA_VERSION,
                "python": python38,
                "constraints": str(constraints_src),
                "constraints_sha256": hashlib.sha256(constraints.read_bytes()).hexdigest(),
                "build_seconds": round(elapsed, 1),
            }, indent=2) + "\n")
            _relocate(tmp, final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if final.exists() and not (final / MARKER).is_file():
                shutil.rmtree(final, ignore_errors=True)
            raise
        progress("Nova venv ready at %s after %.0f s" % (final, elapsed))
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
    ensure_nova_venv(lambda line: print(line, flush=True))
