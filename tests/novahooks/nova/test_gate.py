"""The pre-boot gate without backends: the hook against the relay's gate endpoint on a real
Unix socket and a real SQLite ledger, the configuration, both policies, the time bound, and
the hook side on Python 3.6."""

import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from stevedore.hook import HookManager

from tasks.gate_service import GateService
from novahooks.nova import gate, hooks
from novahooks.settings import GATE_STEPS, SettingsError, load_settings
from tasks.ledger import Ledger
from tests.conftest import ROOT
from tests.novahooks.nova.fakes import instance

UUID = "5b0c2a8e-1f3d-4c6b-9a7e-0d1c2b3a4f5e"
STEPS = "ldap.register, inventory.register"


def events(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    with sqlite3.connect(str(path)) as conn:
        try:
            rows = conn.execute("SELECT body FROM events ORDER BY seq").fetchall()
        except sqlite3.OperationalError:  # the hook is creating the file right now
            return []
    return [json.loads(body) for (body,) in rows]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dict[str, Path]]:
    """Hook configuration through the environment, as an operator may set it."""
    conf = tmp_path / "novahooks.conf"
    conf.write_text("")
    paths = {"outbox": tmp_path / "outbox.sqlite", "socket": tmp_path / "gate.sock",
             "ledger": tmp_path / "ledger.sqlite"}
    monkeypatch.setenv("NOVAHOOKS_CONFIG", str(conf))
    monkeypatch.setenv("NOVAHOOKS_OUTBOX_PATH", str(paths["outbox"]))
    monkeypatch.setenv("NOVAHOOKS_GATE_STEPS", STEPS)
    monkeypatch.setenv("NOVAHOOKS_GATE_TIMEOUT", "5")
    monkeypatch.setenv("NOVAHOOKS_GATE_POLL_INTERVAL", "0.05")
    hooks.reset_outbox()
    yield paths
    hooks.reset_outbox()


@pytest.fixture
def service(env: Dict[str, Path]) -> Iterator[Tuple[GateService, List[Tuple[Dict, str]]]]:
    audited = []  # type: List[Tuple[Dict[str, Any], str]]
    svc = GateService(str(env["socket"]), "sqlite:///%s" % env["ledger"],
                      lambda event, error: audited.append((event, error))).start()
    yield svc, audited
    svc.stop()


def build_pre(policy: str, monkeypatch: pytest.MonkeyPatch, uuid: str = UUID) -> None:
    """build_instance's pre-hook with Nova 21's positional arguments."""
    monkeypatch.setenv("NOVAHOOKS_GATE_ON_FAILURE", policy)
    hooks.reset_outbox()
    inst = instance(uuid, "gated-1", vm_state="building", task_state="scheduling", host=None)
    pre = getattr(hooks.BuildInstanceHook(), "pre", None)
    assert pre is not None
    pre(object(), object(), inst, {}, object(), {}, None, [], None, None, None, "node1",
        None, None, None)


def play_worker(outbox: Path, ledger_url: str, steps: List[str],
                fail: str = "") -> threading.Thread:
    """Stand in for the Celery steps on the ledger only: note progress as StepTask does."""
    book = Ledger(ledger_url)

    def run() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            created = [e for e in events(outbox) if e["kind"] == "create"]
            if created:
                for step in steps:
                    time.sleep(0.1)
                    book.step_done(created[0], step, last=step == "audit.record")
                if fail:
                    book.dead_letter(created[0], fail, "Conflict: name taken", 1)
                return
            time.sleep(0.02)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_gate_steps_are_the_pre_boot_chain_minus_its_audit() -> None:
    from tasks.chains import steps
    assert list(GATE_STEPS) == steps("create")[:-1]


@pytest.mark.parametrize("key,value,message", [
    ("steps", "dns.register", "[gate] steps: dns.register cannot gate a boot"),
    ("timeout", "0", "[gate] timeout: 0.0 must be above 0"),
    ("timeout", "3600", "[gate] timeout: 3600.0 must be above 0 and at most 600"),
    ("on_failure", "retry", "[gate] on_failure: 'retry' is not continue or abort"),
    ("poll_interval", "-1", "[gate] poll_interval"),
    ("socket", "gate.sock", "[gate] socket: 'gate.sock' is not an absolute path"),
])
def test_bad_gate_settings_name_the_key(key: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(environ={"NOVAHOOKS_GATE_" + key.upper(): value})
    assert message in str(err.value)


def test_socket_defaults_beside_the_outbox_and_refuses_an_overlong_path() -> None:
    settings = load_settings(environ={"NOVAHOOKS_OUTBOX_PATH": "/var/lib/novahooks/o.sqlite"})
    assert gate.socket_path(settings) == "/var/lib/novahooks/gate.sock"
    settings = load_settings(environ={"NOVAHOOKS_GATE_SOCKET": "/" + "x" * 120})
    with pytest.raises(SettingsError, match=r"\[gate\] socket: .* longer than 107 bytes"):
        gate.socket_path(settings)


def test_without_gate_nova_finds_no_pre_and_nothing_is_written(
        env: Dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOVAHOOKS_GATE_STEPS")
    hooks.reset_outbox()
    manager = HookManager("nova.hooks", "build_instance", invoke_on_load=True)
    (ext,) = manager.extensions
    assert getattr(ext.obj, "pre", None) is None  # what nova.hooks.HookManager._run asks
    assert not hasattr(hooks.BuildInstanceHook(), "pre")
    assert events(env["outbox"]) == []


def test_gate_passes_once_the_ledger_shows_the_steps_done(
        env: Dict[str, Path], service: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = play_worker(env["outbox"], "sqlite:///%s" % env["ledger"],
                         ["ldap.register", "inventory.register"])
    started = time.monotonic()
    build_pre("abort", monkeypatch)
    waited = time.monotonic() - started
    worker.join()
    assert 0.2 <= waited < 3, waited  # held until the second step was noted, no longer
    (created,) = events(env["outbox"])
    assert created["kind"] == "create" and created["uuid"] == UUID
    assert created["addresses"] is None and created["source"] == "hook:build_instance:gate"
    assert service[1] == []


def test_a_chain_that_finished_without_the_gated_steps_does_not_hold_the_build(
        env: Dict[str, Path], service: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A chain built without them (a VM left out by policy) will never run them."""
    play_worker(env["outbox"], "sqlite:///%s" % env["ledger"], ["audit.record"])
    caplog.set_level("INFO", logger="novahooks.gate")
    started = time.monotonic()
    build_pre("abort", monkeypatch)
    assert time.monotonic() - started < 3
    assert "the chain finished without ldap.register, inventory.register" in caplog.text
    assert [e["kind"] for e in events(env["outbox"])] == ["create"]


def test_a_dead_letter_fails_the_gate_at_once_and_abort_undoes_and_raises(
        env: Dict[str, Path], service: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    play_worker(env["outbox"], "sqlite:///%s" % env["ledger"], ["ldap.register"],
                fail="inventory.register")
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        build_pre("abort", monkeypatch)
    assert time.monotonic() - started < 3  # not the 5 s timeout: the dead letter decided
    assert type(err.value).__name__ == "FatalHookException"
    assert err.value.__class__ is gate.fatal_hook_exception()
    assert "inventory.register gave up: Conflict: name taken" in str(err.value)
    kinds = [(e["kind"], e["uuid"]) for e in events(env["outbox"])]
    assert kinds == [("create", UUID), ("delete", UUID)]
    _, audited = service
    deadline = time.monotonic() + 5
    while not audited and time.monotonic() < deadline:
        time.sleep(0.05)
    (event, error), = audited
    assert event["kind"] == "create" and event["uuid"] == UUID
    assert "pre-boot gate failed" in error and "policy abort" in error


def test_unreachable_endpoint_with_continue_returns_at_the_bound(
        env: Dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOVAHOOKS_GATE_TIMEOUT", "0.6")
    started = time.monotonic()
    build_pre("continue", monkeypatch)
    waited = time.monotonic() - started
    assert 0.6 <= waited < 0.9, waited
    assert [e["kind"] for e in events(env["outbox"])] == ["create"]
    assert "timed out after 0.6 s waiting for ldap.register, inventory.register" in caplog.text
    assert "policy continue" in caplog.text and "gate endpoint" in caplog.text


def test_unreachable_endpoint_with_abort_raises_at_the_bound_after_recording_the_undo(
        env: Dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVAHOOKS_GATE_TIMEOUT", "0.6")
    started = time.monotonic()
    with pytest.raises(gate.FatalHookException, match="policy abort: build stopped, "
                                                      "registrations undone"):
        build_pre("abort", monkeypatch)
    assert time.monotonic() - started < 0.9
    assert [e["kind"] for e in events(env["outbox"])] == ["create", "delete"]


def test_endpoint_refuses_what_it_does_not_know(env: Dict[str, Path], service: Any) -> None:
    path = str(env["socket"])
    assert oct(os.stat(path).st_mode & 0o777) == "0o660"
    assert gate.fetch_status(path, "e-1", 2) == {"event_id": "e-1", "done": [], "failed": [],
                                                 "finished": False}
    for method, url, body in [("GET", "/v1/events/../../etc", None),
                              ("GET", "/v2/events/e-1", None),
                              ("POST", "/v1/events/e-1/verdict", {"event": {"event_id": "e-2"},
                                                                  "outcome": "failed",
                                                                  "policy": "abort"}),
                              ("POST", "/v1/events/e-1/verdict", {"event": {"event_id": "e-1"},
                                                                  "outcome": "passed",
                                                                  "policy": "abort"})]:
        with pytest.raises(gate.GateUnavailable, match="HTTP 40[04]"):
            gate._request(path, method, url, 2, body)
    assert service[1] == []


def test_a_second_service_refuses_a_live_socket_and_takes_over_a_stale_one(
        env: Dict[str, Path], service: Any) -> None:
    url = "sqlite:///%s" % env["ledger"]
    with pytest.raises(RuntimeError, match="served by another process"):
        GateService(str(env["socket"]), url, lambda e, m: None).start()
    stale = env["socket"].with_name("stale.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody listens: a relay that died
    second = GateService(str(stale), url, lambda e, m: None).start()
    try:
        assert gate.fetch_status(str(stale), "e-1", 2)["done"] == []
    finally:
        second.stop()
    assert not stale.exists()
    not_a_socket = env["socket"].with_name("notes.txt")
    not_a_socket.write_text("keep me")
    with pytest.raises(RuntimeError, match="exists and is not a socket"):
        GateService(str(not_a_socket), url, lambda e, m: None).start()
    assert not_a_socket.read_text() == "keep me"


PY36 = sorted(Path.home().glob(".pyenv/versions/3.6*/bin/python"))


@pytest.mark.skipif(not PY36, reason="no Python 3.6 under pyenv")
def test_hook_side_gate_runs_on_python_3_6(tmp_path: Path) -> None:
    python = PY36[-1]
    script = (
        "import time\n"
        "from novahooks.nova import hooks, gate\n"
        "inst = {'uuid': '%s', 'hostname': 'py36', 'vm_state': 'building'}\n"
        "started = time.monotonic()\n"
        "try:\n"
        "    hooks.BuildInstanceHook().pre(None, None, inst)\n"
        "except gate.FatalHookException as exc:\n"
        "    print('raised %%.2f %%s' %% (time.monotonic() - started, exc))\n" % UUID)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
           "NOVAHOOKS_CONFIG": os.devnull, "NOVAHOOKS_OUTBOX_PATH": str(tmp_path / "o.sqlite"),
           "NOVAHOOKS_GATE_STEPS": "ldap.register", "NOVAHOOKS_GATE_TIMEOUT": "0.3",
           "NOVAHOOKS_GATE_ON_FAILURE": "abort"}
    out = subprocess.run([str(python), "-c", script], env=env, cwd=str(tmp_path),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("raised 0.3"), out.stdout + out.stderr[-2000:]
    assert "timed out after 0.3 s waiting for ldap.register" in out.stdout
    assert [e["kind"] for e in events(tmp_path / "o.sqlite")] == ["create", "delete"]
