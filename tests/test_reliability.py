"""Order per instance, dead letters and replay, stalled chains and reconcile,
with real worker processes and real backends."""

import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from ldap3 import Connection, Server, Tls

from tests.demo import gone, holdings, registered
from novahooks.event import Address
from tests.servers.stack import Processes, Stack
from tasks.simulate import Vm, create, delete, with_uuid
from tests.conftest import mac, make_event, unique_v4, unique_v6
from tests.helpers import audit_lines, until


pytestmark = pytest.mark.usefixtures("hook_outbox")


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "novahooks.cli"] + list(args),
                          env=stack.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)


def finished(stack: Stack, vm: Vm, kinds: List[str]) -> bool:
    done = {r["kind"] for r in audit_lines(stack.audit_path, vm.uuid) if r["stage"] == "done"}
    return set(kinds) <= done


@pytest.mark.parametrize("order", ["delete-first", "create-then-delete", "interleaved"])
def test_create_and_delete_race_leaves_nothing(stack: Stack, processes: Processes,
                                               order: str) -> None:
    vms = [with_uuid(Vm("race-%s-%d" % (order[:3], i), ((unique_v4(), mac()),
                                                         (unique_v6(), mac()))))
           for i in range(6)]
    for i, vm in enumerate(vms):
        if order == "delete-first":
            delete(vm)
            create(vm)
        elif order == "create-then-delete":
            create(vm)
            delete(vm)
        else:
            (create if i % 2 else delete)(vm)
    if order == "interleaved":
        for i, vm in enumerate(vms):
            (delete if i % 2 else create)(vm)
    for vm in vms:
        until(lambda vm=vm: finished(stack, vm, ["create", "build", "delete"]), 180,
              "all chains of %s" % vm.hostname)
    leftovers = [vm.hostname for vm in vms if not gone(vm, holdings(vm))]
    assert leftovers == []


def test_permanent_failure_is_a_dead_letter_that_replays_after_the_fix(
        stack: Stack, processes: Processes) -> None:
    ev = make_event(addresses=[Address(unique_v4(), 4, mac(), "private")])
    vm = Vm(ev.hostname, tuple((a.address, a.mac) for a in ev.addresses), uuid=ev.uuid)
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(stack.slapd.ca_file))
    admin = Connection(Server(stack.slapd.url, tls=tls), stack.slapd.admin_dn,
                       stack.slapd.admin_password)
    admin.open()
    admin.start_tls()
    admin.bind()
    squatter = "cn=%s,%s" % (ev.hostname, stack.slapd.hosts_base)
    assert admin.add(squatter, ["device"], {"description": "someone-else"})
    from tasks import chains
    from tasks.app import app
    chains.build(app, ev.to_dict()).apply_async()
    until(lambda: any(r["stage"] == "failed" for r in audit_lines(stack.audit_path, ev.uuid)), 120,
          "failure audited")
    listing = cli(stack, "dead-letters", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    (letter,) = [r for r in json.loads(listing.stdout) if r["instance_uuid"] == ev.uuid]
    # The shared validation of the first writing step finds the squatter before any write.
    assert letter["step"] == "dns.register" and ev.hostname in letter["error"], letter
    state = holdings(vm)
    assert state["dns"]["A"] == [] and not state["ipam"] and state["ldap"] == [] \
        and state["inventory"] == {}, \
        "refused whole: nothing written before the refusal"
    shown = cli(stack, "dead-letters", "show", str(letter["id"]))
    assert json.loads(shown.stdout)["event"]["uuid"] == ev.uuid
    assert admin.delete(squatter)
    admin.unbind()
    replay = cli(stack, "dead-letters", "replay", str(letter["id"]))
    assert replay.returncode == 0 and "replayed 1" in replay.stdout, replay.stdout
    until(lambda: registered(vm, holdings(vm)), 120, "registered after replay")
    again = cli(stack, "dead-letters", "list", "--json")
    assert all(r["instance_uuid"] != ev.uuid for r in json.loads(again.stdout))
    assert cli(stack, "dead-letters", "show", "999999").returncode == 1


def test_reconcile_finishes_a_chain_that_stopped_half_way(stack: Stack,
                                                          processes: Processes) -> None:
    from tasks import chains
    from tasks.app import app
    ev = make_event(addresses=[Address(unique_v4(), 4, mac(), "private")])
    vm = Vm(ev.hostname, tuple((a.address, a.mac) for a in ev.addresses), uuid=ev.uuid)
    event: Dict[str, Any] = ev.to_dict()
    chains._chain(app, event, chains.PLANS["build"][:1]).apply_async()  # crash after dns
    until(lambda: holdings(vm)["dns"]["A"] == [ev.addresses[0].address], 120, "the first step")
    assert holdings(vm)["ldap"] == []
    result = cli(stack, "reconcile", "--older-than", "0", "--json")
    assert result.returncode == 0, result.stderr
    resumed = [r for r in json.loads(result.stdout) if r["instance_uuid"] == ev.uuid]
    assert [r["resumed_at_step"] for r in resumed] == ["ldap.register"]
    until(lambda: registered(vm, holdings(vm)), 120, "registered after reconcile")
    until(lambda: any(r["kind"] == "build" and r["stage"] == "done"
                      for r in audit_lines(stack.audit_path, ev.uuid)), 30, "chain finished")
    again = json.loads(cli(stack, "reconcile", "--older-than", "0", "--json").stdout)
    assert all(r["instance_uuid"] != ev.uuid for r in again)


def test_reconcile_finds_a_chain_whose_first_message_the_broker_lost(
        stack: Stack, processes: Processes) -> None:
    """kombu's Redis transport takes a message off the queue (BRPOP) and records it as
    unacknowledged in a second round trip: a worker SIGKILLed in between loses it, and
    no step of its chain ever ran. Here the test is that worker: with the dns pool
    (its first step's) stopped it pops the build chain's first message and drops it."""
    import signal
    import redis
    vm = with_uuid(Vm("lost-first", ((unique_v4(), mac()),)))
    processes.workers["dns"].stop(signal.SIGKILL)
    try:
        create(vm)
        client = redis.Redis.from_url(stack.redis.url)
        taken = client.brpop(["dns"], timeout=60)
        assert taken is not None, "the relay never published the build chain"
        assert vm.uuid in taken[1].decode()
    finally:
        processes.start_worker("dns")
        until(lambda: "ready." in processes.workers["dns"].log.read_text(errors="replace"),
              60, "dns pool restarted")
    until(lambda: finished(stack, vm, ["create"]), 120, "the create chain")
    assert holdings(vm)["dns"]["A"] == [], "the lost chain ran anyway"
    result = cli(stack, "reconcile", "--older-than", "0", "--json")
    assert result.returncode == 0, result.stderr
    resumed = [r for r in json.loads(result.stdout) if r["instance_uuid"] == vm.uuid]
    assert [(r["kind"], r["resumed_at_step"]) for r in resumed] == [("build", "dns.register")]
    until(lambda: registered(vm, holdings(vm)), 120, "registered after reconcile")


def _pool_children(pid: int) -> List[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], stdout=subprocess.PIPE,
                         universal_newlines=True).stdout
    return [int(p) for p in out.split()]


def test_message_that_kills_its_worker_every_time_is_parked(stack: Stack,
                                                           processes: Processes) -> None:
    """slapd hangs, so ldap.register is always in flight when the process running it is
    killed: its pool process for the first deliveries, then the process its probe (the
    delivery alone, after the cool-down) was forked into. The pool process survives
    that one, which is the proof that parks the message."""
    import os
    import signal
    import time
    from tasks import chains
    from tasks.app import app
    ev = make_event(addresses=[Address(unique_v4(), 4, mac(), "private")])
    worker = processes.workers["ldap"]
    os.kill(stack.slapd.process.proc.pid, signal.SIGSTOP)
    kills = 0
    try:
        chains.build(app, ev.to_dict()).apply_async()
        deadline = time.monotonic() + 300  # a bound, not a measure: cool-down and probe
        while time.monotonic() < deadline:
            if any(r["stage"] == "failed" for r in audit_lines(stack.audit_path, ev.uuid)):
                break
            if ev.uuid in worker.log.read_text() or kills:
                time.sleep(1.5)
                for child in _pool_children(worker.proc.pid):
                    for victim in _pool_children(child) or [child]:
                        os.kill(victim, signal.SIGKILL)
                kills += 1
            else:
                time.sleep(0.2)
    finally:
        os.kill(stack.slapd.process.proc.pid, signal.SIGCONT)
    (failed,) = [r for r in audit_lines(stack.audit_path, ev.uuid) if r["stage"] == "failed"]
    assert failed["step"] == "ldap.register" and "PoisonMessage" in failed["error"]
    letters = json.loads(cli(stack, "dead-letters", "list", "--json").stdout)
    assert [r["step"] for r in letters if r["instance_uuid"] == ev.uuid] == ["ldap.register"]
    assert "killed the process that ran it alone" in failed["error"]
    assert kills >= 4, kills  # 3 deaths ([retry] max_deliveries) and the probe's, at least
    vm = Vm(ev.hostname, tuple((a.address, a.mac) for a in ev.addresses), uuid=ev.uuid)
    assert holdings(vm)["ldap"] == [], "the parked step did not run"


def test_undo_policy_removes_what_earlier_steps_made(stack: Stack,
                                                     processes: Processes) -> None:
    """The chain the 'undo' policy publishes when a create fails half-way."""
    from tasks import chains
    from tasks.app import app
    ev = make_event(addresses=[Address(unique_v4(), 4, mac(), "private")])
    vm = Vm(ev.hostname, tuple((a.address, a.mac) for a in ev.addresses), uuid=ev.uuid)
    chains._chain(app, ev.to_dict(), chains.PLANS["build"][:3]).apply_async()
    until(lambda: len(holdings(vm)["ipam"]) == 1, 120, "first three steps (IPAM the third)")
    chains.undo(app, ev.to_dict(), failed_step="inventory.register")
    until(lambda: gone(vm, holdings(vm)), 120, "undone")
    until(lambda: any(r["stage"] == "undone" for r in audit_lines(stack.audit_path, ev.uuid)), 30,
          "undo audited")
    chains.build(app, ev.to_dict()).apply_async()
    until(lambda: registered(vm, holdings(vm)), 120, "an undo leaves no tombstone: replay works")


def test_an_innocent_message_running_whenever_its_worker_is_killed_is_not_parked(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole ipam worker (every process of it) SIGKILLed each time the message is in
    its NetBox call, more often than [retry] max_deliveries and than the quorum queue's
    delivery limit: a rolling restart, not the message's doing. It is delivered again
    alone after the cool-down, dies with its worker again, and is never parked: not in
    the ledger's dead letters, not in novahooks.dead. It is still delivered after the
    last kill."""
    import os
    import signal
    from tasks.ledger import Ledger
    from tests.test_rabbitmq import dead_letters, hung_ipam_worker
    with hung_ipam_worker(stack, tmp_path, "novahooks-innocent", monkeypatch, max_deliveries="2",
                          poison_cooldown="1") as (hole, vhost, procs, worker, app):
        ev = make_event(addresses=[Address(unique_v4(), 4, mac(), "private")])
        app.send_task("ipam.reserve", args=[ev.to_dict()])
        app.close()
        kills = 0
        limit = 2 + 2  # DELIVERY_LIMIT for max_deliveries 2 (celeryconfig.py)
        while kills <= limit:
            seen = hole.accepted
            until(lambda seen=seen: hole.accepted > seen, 60, "delivery %d" % (kills + 1))
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait(10)
            kills += 1
            worker = procs.start_worker("ipam", concurrency=1)
            until(lambda worker=worker: "ready." in worker.log.read_text(errors="replace"),
                  60, "ipam worker restarted")
        seen = hole.accepted
        until(lambda: hole.accepted > seen, 60, "the delivery after the last kill")
        logs = "".join(path.read_text(errors="replace")
                       for path in (tmp_path / "logs").glob("worker-ipam*.log"))
        assert dead_letters(vhost) == 0
        letters = Ledger("sqlite:///%s" % (tmp_path / "ledger.sqlite")).dead_letters()
        assert [r for r in letters if r["instance_uuid"] == ev.uuid] == []
        assert "PoisonMessage" not in logs
        print("%d kills of the whole worker, not parked" % kills)
