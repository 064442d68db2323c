"""The ``novahooks`` command as an operator runs it, against the real stack."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

from tests.servers.base import free_port
from tests.servers.stack import Processes, Stack


def run(stack: Stack, *args: str,
        env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    full = stack.env()
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "novahooks.cli"] + list(args), env=full,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)


def test_check_passes_on_a_good_configuration(stack: Stack, processes: Processes) -> None:
    result = run(stack, "check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    names = {row["check"]: row for row in json.loads(result.stdout)}
    assert set(names) == {"broker", "consumers", "ledger", "ipam", "dns", "directory",
                          "inventory", "audit/jsonl"}
    assert "password required, task messages signed" in names["broker"]["detail"]
    assert "TSIG key" in names["dns"]["detail"] and "StartTLS" in names["directory"]["detail"]


def test_check_names_each_failing_backend_and_exits_1(stack: Stack) -> None:
    result = run(stack, "check", env={"NOVAHOOKS_DIRECTORY_PASSWORD": "wrong",
                                      "NOVAHOOKS_DNS_PORT": str(free_port()),
                                      "NOVAHOOKS_IPAM_TOKEN": "0" * 40})
    assert result.returncode == 1
    lines = {line.split()[1]: line for line in result.stdout.splitlines()
             if line.startswith(("PASS", "FAIL"))}
    assert lines["directory"].startswith("FAIL") and "invalidCredentials" in lines["directory"]
    assert lines["dns"].startswith("FAIL") and "unreachable" in lines["dns"]
    assert lines["ipam"].startswith("FAIL") and "refused the token" in lines["ipam"]
    assert lines["inventory"].startswith("PASS") and lines["broker"].startswith("PASS")


def test_wrong_configuration_exits_2_naming_the_key(stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    text = stack.config_path.read_text()
    bad.write_text(text.replace("[ledger]\n", "[ledger]\nstaled_after = 3\n") + "\n[dns2]\n")
    result = run(stack, "--config", str(bad), "check")
    assert result.returncode == 2
    assert "unknown section [dns2]" in result.stderr
    assert "[ledger] staled_after: unknown key" in result.stderr


def test_status_shows_outbox_relay_queues_workers(stack: Stack, processes: Processes) -> None:
    from tests.helpers import until
    until(lambda: stack.outbox_path.exists(), 30, "the relay opened its outbox")
    result = run(stack, "status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["outbox"]["depth"] == 0
    assert report["relays"] and report["relays"][0]["last_seen_s"] < 30
    assert set(report["queues"]) == {"ipam", "dns", "ldap", "inventory", "audit"}
    assert all(isinstance(depth, int) for depth in report["queues"].values())
    assert {"ipam@novahooks", "dns@novahooks", "ldap@novahooks", "inventory@novahooks",
            "audit@novahooks"} <= set(report["workers"])
    text = run(stack, "status")
    assert "workers" in text.stdout and "queues" in text.stdout


def test_status_with_the_broker_unreachable_exits_1(stack: Stack) -> None:
    result = run(stack, "status", env={
        "NOVAHOOKS_BROKER_URL": "redis://127.0.0.1:%d/0" % free_port(),
        "NOVAHOOKS_BROKER_CONNECT_TIMEOUT": "1"})
    assert result.returncode == 1 and "status unavailable" in result.stderr


def test_audit_verify_detects_an_edited_line(stack: Stack, processes: Processes,
                                             tmp_path: Path) -> None:
    copy = tmp_path / "audit.jsonl"
    lines = stack.audit_path.read_text().splitlines() if stack.audit_path.exists() else []
    if len(lines) < 2:
        from tasks.backends.audit.jsonl import JsonlAudit
        from types import SimpleNamespace
        sink = JsonlAudit(SimpleNamespace(path=str(copy)))
        for i in range(3):
            sink.record({"instance_uuid": "u%d" % i, "stage": "done"})
    else:
        copy.write_text("\n".join(lines) + "\n")
    assert run(stack, "audit", "verify", str(copy)).returncode == 0
    text = copy.read_text().splitlines()
    record = json.loads(text[1])
    record["hostname"] = "forged"
    text[1] = json.dumps(record, sort_keys=True)
    copy.write_text("\n".join(text) + "\n")
    result = run(stack, "audit", "verify", str(copy))
    assert result.returncode == 1 and "line 2" in result.stdout and "BROKEN" in result.stdout


def test_simulate_create_resize_delete_through_the_installed_hooks(
        stack: Stack, processes: Processes) -> None:
    from tests.demo import gone, holdings, registered
    from tasks.simulate import Vm
    from tests.conftest import mac, unique_v4, unique_v6
    from tests.helpers import until
    v4, v6, m = unique_v4(), unique_v6(), mac()
    out = run(stack, "simulate", "create", "--hostname", "cli-sim-1", "--address",
              "%s,%s" % (v4, m), "--address", "%s,%s" % (v6, m))
    assert out.returncode == 0, out.stderr
    uuid = json.loads(out.stdout)["uuid"]
    vm = Vm("cli-sim-1", ((v4, m), (v6, m)), uuid=uuid)
    until(lambda: registered(vm, holdings(vm)), 90, "registered")
    out = run(stack, "simulate", "resize", "--hostname", "cli-sim-1", "--uuid", uuid,
              "--vcpus", "4", "--memory-mb", "8192")
    assert out.returncode == 0, out.stderr
    until(lambda: holdings(vm)["inventory"].get("vcpus") == 4, 60, "resized")
    out = run(stack, "simulate", "delete", "--hostname", "cli-sim-1", "--uuid", uuid,
              "--address", "%s,%s" % (v4, m), "--address", "%s,%s" % (v6, m))
    assert out.returncode == 0, out.stderr
    until(lambda: gone(vm, holdings(vm)), 90, "removed")


def test_simulate_with_a_broken_configuration_exits_2_and_writes_nothing(
        stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("[outbox]\npath = %s\nbusy_timeout_ms = soon\n" % (tmp_path / "o.sqlite"))
    result = run(stack, "--config", str(bad), "simulate", "create", "--hostname", "x1",
                 "--address", "10.20.99.9")
    assert result.returncode == 2
    assert "[outbox] busy_timeout_ms: 'soon' is not a valid int" in result.stderr
    assert not (tmp_path / "o.sqlite").exists()
