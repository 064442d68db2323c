"""The pre-boot gate against the real stack: build_instance's pre-hook -> outbox -> a relay
serving the gate endpoint -> the session's worker pools -> slapd and NetBox, and back.

The gated relay runs on a configuration cloned from the session stack (its own outbox and
gate socket, the session's broker, ledger and workers). Each test asks slapd and NetBox
themselves what they hold for its instance.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from novahooks.nova import gate, hooks
from tests.servers.stack import Processes, Stack
from novahooks.settings import Settings
from tasks.simulate import Vm
from tests.conftest import ROOT
from tests.helpers import audit_lines, until
from tests.novahooks.nova.fakes import instance


@pytest.fixture(scope="module")
def gated(stack: Stack, processes: Processes, settings: Settings,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    clone = stack.clone(tmp_path_factory.mktemp("gate"), stack.broker_url or stack.redis.url,
                        ledger={"url": settings.ledger.url},
                        gate={"steps": "ldap.register, inventory.register", "timeout": "20",
                              "poll_interval": "0.05"})
    relay = Processes(clone, progress=lambda line: None)
    relay.start_relay()
    try:
        sock = clone.workdir / "gate.sock"
        until(lambda: sock.exists() or relay.relay.proc.poll() is not None, 60,
              "gate endpoint of the relay")
        assert sock.exists(), relay.relay.log.read_text()[-3000:]
        yield clone
    finally:
        relay.stop()


@pytest.fixture
def policy(gated: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Point this process's hooks at the gated configuration, with a policy per test."""
    def use(on_failure: str, timeout: float = 20.0) -> None:
        monkeypatch.setenv("NOVAHOOKS_GATE_ON_FAILURE", on_failure)
        monkeypatch.setenv("NOVAHOOKS_GATE_TIMEOUT", str(timeout))
        hooks.reset_outbox()
    monkeypatch.setenv("NOVAHOOKS_CONFIG", str(gated.config_path))
    yield use
    hooks.reset_outbox()


def new_vm(prefix: str) -> Vm:
    ident = str(uuid.uuid4())
    return Vm("%s-%s" % (prefix, ident[:8]), uuid=ident)


def build_pre(vm: Vm) -> float:
    """Nova's build_instance pre-hook for this VM, as nova-compute calls it; seconds taken."""
    inst = instance(vm.uuid, vm.hostname, vm_state="building", task_state="scheduling",
                    host=None)
    started = time.monotonic()
    pre = getattr(hooks.BuildInstanceHook(), "pre", None)
    assert pre is not None, "gate not configured"
    try:
        pre(object(), object(), inst, {}, object(), {}, None, [], None, None, None, "node1",
            None, None, None)
    finally:
        took = time.monotonic() - started
    return took


def held(vm: Vm) -> Dict[str, Any]:
    from tasks import drivers
    return {"ldap": drivers.directory().describe(vm.uuid)["entries"],
            "inventory": drivers.inventory().describe(vm.uuid)}


def gate_audit(stack: Stack, vm: Vm) -> List[Dict[str, Any]]:
    return [r for r in audit_lines(stack.audit_path, vm.uuid)
            if r["stage"] == "failed" and r["step"] == "gate"]


def remove(vm: Vm) -> None:
    """What a delete of the VM would do, so the session's backends stay clean."""
    from novahooks.event import new_event
    from tasks import chains
    from tasks.app import app
    event = new_event("delete", vm.uuid, vm.hostname, source="test")
    chains.build(app, event.to_dict()).apply_async()
    until(lambda: held(vm) == {"ldap": [], "inventory": {}}, 60, "%s removed" % vm.hostname)


def installed_is_current(venv: Path) -> bool:
    """Whether the Nova venv already runs this tree's hook side and entry points.

    tests/nova/test_nova.py installs it earlier in a full run; a second install
    would add 10 to 30 s to the suite for nothing.
    """
    import configparser
    import tomllib
    sites = sorted(venv.glob("lib/python3*/site-packages"))
    if not sites:
        return False
    for src in (ROOT / "novahooks").rglob("*.py"):
        dst = sites[0] / src.relative_to(ROOT)
        if "__pycache__" not in src.parts and (
                not dst.is_file() or dst.read_bytes() != src.read_bytes()):
            return False
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "entry-points"]["nova.hooks"]
    infos = sorted(sites[0].glob("novahooks-*.dist-info/entry_points.txt"))
    parser = configparser.ConfigParser()
    parser.read([str(path) for path in infos])
    return len(infos) == 1 and parser.has_section("nova.hooks") and \
        dict(parser["nova.hooks"]) == wanted


@pytest.fixture(scope="module")
def nova_python() -> Path:
    from tests.nova.venv import ensure_nova_venv, install_novahooks, venv_python
    venv = ensure_nova_venv(lambda line: print(line, flush=True))
    if not installed_is_current(venv):
        install_novahooks(venv, ROOT)
    assert installed_is_current(venv)
    return venv_python(venv)


def squat(stack: Stack, settings: Settings, hostname: str) -> Any:
    """A NetBox VM of that name that is not Nova's: the inventory step must refuse the name."""
    import pynetbox
    from tasks import drivers
    drivers.inventory().describe(str(uuid.uuid4()))  # the driver's cluster exists from here on
    api = pynetbox.api(stack.netbox.url, token=stack.netbox.token)
    cluster = api.virtualization.clusters.get(name=settings.inventory.cluster)
    return api.virtualization.virtual_machines.create(
        name=hostname, cluster=cluster.id, status="active", comments="not Nova's")


def test_gate_holds_the_build_until_slapd_and_netbox_hold_the_vm(
        stack: Stack, policy: Any) -> None:
    policy("abort")
    vm = new_vm("gate-ok")
    took = build_pre(vm)
    state = held(vm)  # at once: the hook returned only after both steps had finished
    assert state["ldap"] == ["cn=%s,%s" % (vm.hostname, stack.slapd.hosts_base)]
    assert state["inventory"]["name"] == vm.hostname
    assert state["inventory"]["status"] == "planned"
    assert took < 20
    assert gate_audit(stack, vm) == []
    remove(vm)


def test_a_directory_that_hangs_times_out_and_continue_lets_the_build_go_on(
        stack: Stack, policy: Any, caplog: pytest.LogCaptureFixture) -> None:
    policy("continue", timeout=3.0)
    vm = new_vm("gate-slow")
    slapd = stack.slapd.process.proc.pid
    os.kill(slapd, signal.SIGSTOP)
    try:
        took = build_pre(vm)  # returns: no exception, the build goes on
    finally:
        os.kill(slapd, signal.SIGCONT)
    assert 3.0 <= took < 3.5, took
    assert "timed out after 3.0 s waiting for ldap.register, inventory.register" in caplog.text
    assert "policy continue" in caplog.text
    (record,) = until(lambda: gate_audit(stack, vm), 30, "audit record of the gate")
    assert record["kind"] == "create" and "policy continue: the build went on" in \
        record["error"]
    # The chain was not abandoned: once slapd answers again, the entry arrives.
    until(lambda: held(vm)["ldap"] and held(vm)["inventory"], 90, "registration after slapd")
    remove(vm)


def test_inventory_refusing_the_name_aborts_the_build_and_undoes_the_directory_entry(
        stack: Stack, settings: Settings, policy: Any) -> None:
    import pynetbox
    from sqlalchemy import select
    from tasks.ledger import ledger, progress
    policy("abort")
    vm = new_vm("gate-clash")
    squatter = squat(stack, settings, vm.hostname)
    api = pynetbox.api(stack.netbox.url, token=stack.netbox.token)
    try:
        with pytest.raises(Exception) as err:
            build_pre(vm)
        assert type(err.value).__name__ == "FatalHookException"
        message = str(err.value)
        assert "inventory.register gave up: Conflict" in message, message
        assert "policy abort: build stopped, registrations undone" in message
        # The directory entry had been made before the inventory refused ...
        with ledger(settings.ledger.url).engine.connect() as conn:
            done = conn.execute(select(progress.c.done_steps)
                                .where(progress.c.instance_uuid == vm.uuid)
                                .where(progress.c.kind == "create")).scalar_one()
        assert done.split(",")[0] == "ldap.register"
        # ... and is gone from slapd now; NetBox keeps only the record that was not ours.
        until(lambda: held(vm) == {"ldap": [], "inventory": {}}, 60, "undo in slapd")
        assert api.virtualization.virtual_machines.get(squatter.id).comments == "not Nova's"
        until(lambda: any(r["kind"] == "delete" and r["stage"] == "done"
                          for r in audit_lines(stack.audit_path, vm.uuid)), 30,
              "audit of the undo")
        (record,) = until(lambda: gate_audit(stack, vm), 30, "audit record of the gate")
        assert "policy abort: the build was stopped" in record["error"]
    finally:
        squatter.delete()


def test_real_nova_aborted_build_stays_in_build_without_host_and_is_undone(
        stack: Stack, settings: Settings, gated: Stack, policy: Any,
        nova_python: Path) -> None:
    """Nova 21.2.4 itself: FatalHookException from build_instance's pre-hook, then what the
    API shows for the server, and the directory entry made before the refusal removed."""
    from tests.nova.test_nova import NovaProcess
    policy("abort")
    name = "gate-nova-%s" % uuid.uuid4().hex[:8]
    squatter = squat(stack, settings, name)
    try:
        log = gated.workdir / "logs" / "nova.log"
        nova = NovaProcess(nova_python, gated)
        try:
            reply = nova.send("boot " + json.dumps({"name": name}))
            assert reply["event"] == "error", reply
            server = reply["server"]
            # The caller of the hooked method frees the claim after the reply went out.
            until(lambda: "Deleted allocation for instance %s" % server["id"] in
                  log.read_text(), 30, "Nova's clean-up of the failed build")
        finally:
            nova.close()
        assert "FatalHookException: novahooks pre-boot gate failed" in reply["message"]
        assert "inventory.register gave up: Conflict" in reply["message"]
        # Nothing of _do_build_and_run_instance ran: no claim, no port, no fault, no ERROR.
        assert (server["status"], server["host"], server["fault"], server["addresses"]) == \
            ("BUILD", None, None, {})
        assert "Fatal Exception running build_instance pre-hook" in log.read_text()
        vm = Vm(server["hostname"], uuid=server["id"])
        until(lambda: any(r["kind"] == "delete" and r["stage"] == "done"
                          for r in audit_lines(stack.audit_path, vm.uuid)), 60,
              "audit of the undo")
        until(lambda: held(vm) == {"ldap": [], "inventory": {}}, 60, "undo in slapd")
    finally:
        squatter.delete()


def test_without_a_gate_nothing_waits_and_the_relay_serves_nothing(
        stack: Stack, processes: Processes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVAHOOKS_CONFIG", str(stack.config_path))
    hooks.reset_outbox()
    try:
        assert gate.config() is None
        assert getattr(hooks.BuildInstanceHook(), "pre", None) is None
        assert not (Path(stack.outbox_path).parent / "gate.sock").exists()
    finally:
        hooks.reset_outbox()


def _cli(env: Dict[str, str], *args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "novahooks.cli"] + list(args), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)


def test_check_and_status_say_whether_the_relay_answers_the_gate(gated: Stack) -> None:
    """A gated host whose relay is down makes every build wait out the timeout: say so."""
    env = gated.env()
    result = _cli(env, "check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = [r for r in json.loads(result.stdout) if r["check"] == "gate"]
    assert row["ok"] and str(gated.workdir / "gate.sock") in row["detail"], row
    report = json.loads(_cli(env, "status", "--json").stdout)
    assert report["gate"]["answering"] is True, report["gate"]
    human = _cli(env, "status").stdout
    assert "gate        relay answers on %s" % (gated.workdir / "gate.sock") in human, human

    env["NOVAHOOKS_GATE_SOCKET"] = str(gated.workdir / "nobody.sock")
    result = _cli(env, "check")
    assert result.returncode == 1, result.stdout
    (line,) = [text for text in result.stdout.splitlines() if text.split()[1:2] == ["gate"]]
    assert line.startswith("FAIL") and "no relay answers on %s" % env[
        "NOVAHOOKS_GATE_SOCKET"] in line and "then continue" in line, line
    report = json.loads(_cli(env, "status", "--json").stdout)
    assert report["gate"]["answering"] is False, report["gate"]
