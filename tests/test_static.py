"""Lint and type checks, run like every other test so a clean clone's CI enforces them."""

import subprocess
import sys

from tests.conftest import ROOT


def _run(*argv: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m"] + list(argv), cwd=str(ROOT),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "novahooks", "tasks", "tests", "bench", "celeryconfig.py")
    assert result.returncode == 0, result.stdout


def test_mypy_finds_nothing_in_the_product() -> None:
    result = _run("mypy", "novahooks", "tasks", "celeryconfig.py")
    assert result.returncode == 0, result.stdout[-5000:]
