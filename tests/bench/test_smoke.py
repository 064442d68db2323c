"""A short run of every bench script at small sizes: each still runs and says what it measured.

The scripts that bind their own process to a private broker run as
subprocesses; the throughput functions run here against the session stack and
its worker pools. The numbers are not judged (a loaded CI machine gives any
number), only that each run finished, lost nothing and reported its key line.
"""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from tests.servers.stack import Processes, Stack
from tests.conftest import ROOT


def run(argv: List[str], timeout: float = 300) -> Dict[str, str]:
    """Run a bench script; its ``key=value`` lines as a dict, its output under ``_output``."""
    result = subprocess.run(argv, cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-4000:]
    values = dict(re.findall(r"^(\w+)=(\S+)$", result.stdout, re.M))
    values["_output"] = result.stdout
    return values


def results(path: Path) -> dict:
    data = json.loads(path.read_text())
    assert data["machine"]["nproc"] >= 1
    return data


def test_hook_overhead_under_novas_python(tmp_path: Path) -> None:
    from tests.nova.venv import ensure_nova_venv, nova_constraints, venv_python
    venv = ensure_nova_venv(progress=lambda line: print(line, flush=True))
    python = str(venv_python(venv))
    if subprocess.run([python, "-c", "import redis"]).returncode != 0:
        # the raw-LPUSH baseline uses Ussuri's own redis-py pin
        subprocess.run([python, "-m", "pip", "install", "-q", "-c",
                        str(nova_constraints(venv)), "redis"], check=True)
    out = tmp_path / "hook.json"
    # the synchronous hook's driver calls (bench/inline.py) run in the throughput test
    values = run([python, "bench/hook_overhead.py", "--calls", "300", "--no-sync",
                  "--json", str(out)])
    assert float(values["p99_ratio"]) > 0
    data = results(out)
    assert data["hook"]["n"] == data["lpush"]["n"] == 300


def test_publish(tmp_path: Path) -> None:
    out = tmp_path / "publish.json"
    values = run([sys.executable, "bench/publish.py", "--events", "100", "--block", "50",
                  "--json", str(out)])
    assert float(values["publish_ratio"]) > 0
    data = results(out)
    assert data["relay_drain"]["relay"] > 0 and data["relay_drain"]["raw"] > 0
    assert len(data["per_event"]) == 7


def test_broker_down(tmp_path: Path) -> None:
    out = tmp_path / "down.json"
    values = run([sys.executable, "bench/broker_down.py", "--events", "50",
                  "--json", str(out)])
    assert values["lost"] == "0"
    data = results(out)
    assert data["backlog"] == 50 and data["duplicated"] == 0


def test_scale(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    values = run([sys.executable, "bench/scale.py", "--events", "100", "--warmup", "10",
                  "--json", str(out)])
    assert values["result_keys"] == "0"
    data = results(out)
    assert data["lost"] == 0 and data["rss_end_mb"] > 0 and data["worker_depths"]


@pytest.mark.usefixtures("hook_outbox")
def test_throughput_functions_on_the_session_pipeline(stack: Stack,
                                                      processes: Processes) -> None:
    from bench import throughput
    from bench.chaos import chaos_vms
    from bench.common import step_log_lines
    # the quick backends: NetBox's calls are the same code path, only slower
    alone = throughput.backends_alone(chaos_vms(2, prefix="smoke-alone", first_octet=221),
                                      {queue: 1 for queue in throughput.QUEUE_BACKEND},
                                      queues=("dns", "ldap"))
    assert set(alone) == {"dns", "directory"}
    assert all(result["vm_per_s"] > 0 and result["vms"] == 1 for result in alone.values())
    shared = throughput.shared_server(chaos_vms(1, prefix="smoke-shared", first_octet=222),
                                      {"dns": 1, "ldap": 1}, queues=("dns", "ldap"))
    assert shared["processes"] == 2 and shared["vm_per_s"] > 0
    result = throughput.pipeline(stack, processes, chaos_vms(1, prefix="smoke", first_octet=220),
                                 timeout=240)
    assert result["vms"] == 1 and result["vm_per_s"] > 0
    steps = {s["step"] for s in result["steps"]}
    assert {"ipam.reserve", "inventory.register", "audit.record", "ipam.release"} <= steps
    lines = step_log_lines(stack.workdir / "logs")
    assert all("backend_ms" in line for line in lines)
    # The build chain's first step says what its preflight asked, and for how long (a
    # backend a fault test left unanswering is not asked for a while: not every line).
    asked = [line.get("preflight_ms") or {} for line in lines
             if line["step"] == "dns.register" and line.get("kind") == "build"
             and line["outcome"] == "ok"]
    assert any({"ipam", "directory", "dns"} <= set(a) for a in asked), asked[-5:]


@pytest.mark.usefixtures("hook_outbox")
def test_pipeline_latency_one_vm(stack: Stack, processes: Processes) -> None:
    from bench.pipeline_latency import run_burst
    # vm-240, 10.20.100.242: no other test's address; its A and PTR seen by zone transfer
    found = run_burst(stack, 1, 240, dns=True)
    assert found["vms"] == found["finished"] == 1 and found["last_record"]["n"] == 1
    assert 0 < found["last_record"]["max_ms"] < 240_000
    assert found["dns_resolved"] == 1 and 0 < found["dns"]["max_ms"] < 240_000


def test_signing_cost_against_unsigned(tmp_path: Path) -> None:
    out = tmp_path / "signing.json"
    values = run([sys.executable, "bench/signing.py", "--rounds", "100", "--json", str(out)])
    assert "total / json" in values["_output"]
    data = json.loads(out.read_text())
    assert set(data["us"]) == {"json", "hmac", "x509"} and data["body_bytes"] > 1000
    assert all(row["total"] > 0 for row in data["us"].values())


def test_infoblox_batching_against_the_stand_in(tmp_path: Path) -> None:
    out = tmp_path / "infoblox_batching.json"
    run([sys.executable, "bench/infoblox_batching.py", "--vms", "16", "--threads", "8",
         "--rounds", "2", "--call-ms", "0", "--json", str(out)])
    (result,) = results(out)["results"]
    assert result["alone"]["requests_per_vm"] == 9, "each step's calls alone, as counted " \
        "in bench/infoblox_calls.py"
    assert 0 < result["merged"]["requests_per_vm"] <= 9 and result["merged"]["vm_per_s"] > 0
