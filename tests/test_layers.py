"""The layers hold: the core Nova imports needs only the standard library, and a base
install (as on a Nova host) is the core alone, with a command that never shows a traceback.

Why a test: the hook side runs inside Nova's own interpreter (Ussuri: Python 3.8 with
Nova's pins), where one stray ``import sqlalchemy`` or a generic top-level ``tasks``
module breaks Nova or shadows someone else's package. Nothing in review shows that as
reliably as reading the import graph and installing the wheel into a fresh Python 3.8.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from tests.conftest import ROOT
from tests.servers.base import ServerError, find_python

#: Modules the core may import besides the standard library and itself: ``nova`` is the
#: process the hook side lives in (the gate raises Nova's own FatalHookException).
HOST = {"nova"}
#: The command sits on top of both layers: its subcommands import the worker side lazily.
CLI = ROOT / "novahooks" / "cli.py"


def _imports(path: Path) -> Iterator[Tuple[int, str, bool]]:
    """(line, top-level module, at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0], id(node) in top_level
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0], id(node) in top_level


def _core_modules() -> List[Path]:
    return sorted(p for p in (ROOT / "novahooks").rglob("*.py") if "__pycache__" not in p.parts)


def test_no_core_module_imports_the_worker_side_or_a_third_party_module() -> None:
    allowed = set(sys.stdlib_module_names) | HOST | {"novahooks", "__future__"}
    wrong: List[str] = []
    for path in _core_modules():
        for line, module, at_top in _imports(path):
            if path == CLI and not at_top:
                continue
            if module not in allowed:
                wrong.append("%s:%d imports %s" % (path.relative_to(ROOT), line, module))
    assert wrong == [], "the core must stay stdlib-only:\n" + "\n".join(wrong)


def test_the_worker_side_is_never_imported_by_the_hook_side_at_run_time() -> None:
    """Beyond the source: importing every core module pulls in no worker-side module."""
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts).replace(".__init__", "")
             for p in _core_modules() if p.name != "gate.py"]
    code = ("import importlib, json, sys\n"
            "for name in %r: importlib.import_module(name)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))" % names)
    out = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    assert not loaded & {"tasks", "celeryconfig", "celery", "kombu", "sqlalchemy", "requests"}


@pytest.fixture(scope="module")
def base_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh Python 3.8 venv with only ``pip install .`` (the base distribution)."""
    try:
        python38 = find_python("3.8", "NOVAHOOKS_PYTHON38")
    except ServerError as exc:
        pytest.fail(str(exc))
    venv = tmp_path_factory.mktemp("base-install") / "venv"
    subprocess.run([python38, "-m", "venv", str(venv)], check=True, timeout=120)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(key, None)
    build = tmp_path_factory.mktemp("base-build")
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                          str(ROOT)], cwd=str(build), env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return venv


def _site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


def _top_level(venv: Path) -> Set[str]:
    """Top-level importable names the venv's distributions installed (RECORD files)."""
    names: Set[str] = set()
    for record in _site_packages(venv).glob("*.dist-info/RECORD"):
        if not record.parent.name.startswith("novahooks-"):
            continue
        for row in record.read_text().splitlines():
            first = row.split(",", 1)[0].split("/", 1)[0]
            if not first.endswith((".dist-info", "..")) and first != "__pycache__":
                names.add(first[:-3] if first.endswith(".py") else first)
    return names


def test_a_base_install_holds_the_project_package_alone(base_install: Path) -> None:
    assert _top_level(base_install) == {"novahooks"}
    dists = sorted(p.name.split("-")[0] for p in _site_packages(base_install).glob(
        "*.dist-info"))
    assert [d for d in dists if d not in ("pip", "setuptools")] == ["novahooks"]


def test_the_hooks_import_and_run_on_a_base_install_with_no_third_party_module(
        base_install: Path, tmp_path: Path) -> None:
    code = r'''
import json, sys
from types import SimpleNamespace
from novahooks.nova import hooks
instance = SimpleNamespace(uuid="6c3a4a3e-6f4e-4d0b-9a3f-1f1d1c1b1a19", hostname="base-1",
                           display_name="base-1", project_id="p", user_id="u",
                           availability_zone="nova", host=None, vm_state="building",
                           flavor=None, image_ref="img", os_type="linux", metadata={},
                           system_metadata={})
hooks.CreateInstanceHook().post(([instance], "r-1"))
third = sorted({m.split(".")[0] for m in sys.modules} - set(sys.builtin_module_names)
               - set(getattr(sys, "stdlib_module_names", ())) - {"novahooks"})
print(json.dumps(third))
'''
    env = {"PATH": "/usr/bin:/bin", "NOVAHOOKS_OUTBOX_PATH": str(tmp_path / "outbox.sqlite")}
    out = subprocess.run([str(base_install / "bin" / "python"), "-c", code], env=env,
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    third = json.loads(out.stdout.strip().splitlines()[-1])
    # Python 3.8 has no sys.stdlib_module_names: what is left must at least not be ours
    # or anything a worker needs.
    assert not set(third) & {"tasks", "celeryconfig", "celery", "kombu", "sqlalchemy",
                             "requests", "oslo_messaging"}, third
    rows = subprocess.run(["sqlite3", str(tmp_path / "outbox.sqlite"),
                           "SELECT count(*) FROM events"], capture_output=True, text=True)
    assert rows.stdout.strip() == "1", rows.stdout + rows.stderr


#: Every command with arguments it accepts; on a base install each works or says what to
#: install (exit 2), in one line and without a traceback.
COMMANDS: Dict[str, List[str]] = {
    "relay": ["relay", "--once"],
    "audit": ["audit", "verify", "/nonexistent/audit.jsonl"],
    "check": ["check"],
    "status": ["status"],
    "dead-letters": ["dead-letters", "list"],
    "reconcile": ["reconcile"],
    "simulate": ["simulate", "create", "--hostname", "base-2"],
    "listen": ["listen"],
    "explain": ["explain", "/nonexistent/notification.json"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_on_a_base_install_works_or_names_what_to_install(
        base_install: Path, tmp_path: Path, name: str) -> None:
    config = tmp_path / "novahooks.conf"
    config.write_text("[outbox]\npath = %s\n" % (tmp_path / "outbox.sqlite"))
    out = subprocess.run([str(base_install / "bin" / "novahooks"), "--config", str(config)]
                         + COMMANDS[name], cwd=str(tmp_path), capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert "Traceback" not in out.stderr, out.stderr
    if out.returncode != 0:
        assert out.returncode == 2, (out.returncode, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install novahooks-worker" in lines[0], out.stderr
