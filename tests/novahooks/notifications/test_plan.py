"""Decisions that depend on what the listener learnt before, on a real SQLite state.

Each helper call does what the listener does after the events are durable:
it applies the plan's effects to the state.
"""

import uuid as uuidlib
from pathlib import Path
from typing import Any, Dict, List

import pytest

from novahooks.notifications import message
from novahooks.notifications.plan import Plan, decide
from tasks.notifications.store import State
from tests.novahooks.notifications import samples


@pytest.fixture
def state(tmp_path: Path) -> State:
    return State("sqlite:///%s" % (tmp_path / "ledger.sqlite"))


def run(state: State, body: Dict[str, Any]) -> Plan:
    plan = decide(message.from_dict(body), state)
    state.apply(plan.effects)
    return plan


def addresses(plan: Plan, index: int = 0) -> List[str]:
    return [a.address for a in plan.events[index].addresses]


def vm(n: int) -> Dict[str, Any]:
    port = str(uuidlib.uuid4())
    return {"uuid": str(uuidlib.uuid4()), "hostname": "vm-%d" % n, "port": port,
            "mac": "fa:16:3e:00:00:%02x" % n,
            "fixed": [("10.20.7.%d" % n, "fa:16:3e:00:00:%02x" % n, port),
                      ("2001:db8:20::7:%x" % n, "fa:16:3e:00:00:%02x" % n, port)]}


def created(state: State, v: Dict[str, Any]) -> Plan:
    return run(state, samples.vary("instance-create-end", v["uuid"], v["hostname"], v["fixed"]))


def test_floating_ip_joins_the_instance_owning_its_port(state: State) -> None:
    v = vm(1)
    created(state, v)
    plan = run(state, samples.floatingip("floatingip.create.end", "fip-1", "192.168.1.71",
                                         v["port"], "10.20.7.1"))
    assert [e.kind for e in plan.events] == ["network"]
    assert plan.events[0].uuid == v["uuid"] and plan.events[0].hostname == "vm-1"
    floating = plan.events[0].addresses[-1]
    assert (floating.address, floating.version, floating.mac, floating.port_id) == \
        ("192.168.1.71", 4, v["mac"], v["port"])
    assert addresses(plan) == ["10.20.7.1", "2001:db8:20::7:1", "192.168.1.71"]
    # Nova reports the addresses again (no floating IP in its payload): it stays.
    again = run(state, samples.vary("instance-resize_finish-end", v["uuid"], "vm-1", v["fixed"]))
    assert again.events[0].kind == "resize" and "192.168.1.71" in addresses(again)
    gone = run(state, samples.floatingip("floatingip.update.end", "fip-1", "192.168.1.71",
                                         None, None))
    assert addresses(gone) == ["10.20.7.1", "2001:db8:20::7:1"]


def test_floating_ip_announced_before_create_end_is_kept(state: State) -> None:
    v = vm(2)
    early = run(state, samples.floatingip("floatingip.update.end", "fip-2", "192.168.1.72",
                                          v["port"], "10.20.7.2"))
    assert early.events == () and "belongs to no VM this listener knows yet" in early.ignored
    assert "192.168.1.72" in addresses(created(state, v))


def test_floating_ip_moving_between_instances_updates_both(state: State) -> None:
    a, b = vm(3), vm(4)
    created(state, a)
    created(state, b)
    run(state, samples.floatingip("floatingip.create.end", "fip-3", "192.168.1.73", a["port"],
                                  "10.20.7.3"))
    moved = run(state, samples.floatingip("floatingip.update.end", "fip-3", "192.168.1.73",
                                          b["port"], "10.20.7.4"))
    by_uuid = {e.uuid: [x.address for x in e.addresses] for e in moved.events}
    assert "192.168.1.73" not in by_uuid[a["uuid"]] and "192.168.1.73" in by_uuid[b["uuid"]]
    assert len({e.event_id for e in moved.events}) == 2


def test_delete_uses_captured_addresses_then_forgets(state: State) -> None:
    v = vm(5)
    created(state, v)
    run(state, samples.floatingip("floatingip.create.end", "fip-5", "192.168.1.75", v["port"],
                                  "10.20.7.5"))
    capture = run(state, samples.vary("instance-delete-start", v["uuid"], "vm-5", v["fixed"]))
    assert capture.events == () and "2 address(es) captured" in capture.ignored
    plan = run(state, samples.vary("instance-delete-end", v["uuid"], "vm-5"))
    assert plan.events[0].kind == "delete"
    assert addresses(plan) == ["10.20.7.5", "2001:db8:20::7:5", "192.168.1.75"]
    assert state.known(v["uuid"]) is None and state.floating("fip-5") is None


def test_interface_attach_and_detach_change_only_that_address(state: State) -> None:
    v = vm(6)
    created(state, v)
    port2 = str(uuidlib.uuid4())
    second = ("10.20.7.106", "fa:16:3e:00:01:06", port2)
    attach = run(state, samples.vary("instance-create-end", v["uuid"], "vm-6",
                                     v["fixed"] + [second]) | {
        "event_type": "instance.interface_attach.end"})
    assert attach.events[0].kind == "network"
    assert addresses(attach) == ["10.20.7.6", "2001:db8:20::7:6", "10.20.7.106"]
    detach = run(state, samples.vary("instance-create-end", v["uuid"], "vm-6", v["fixed"]) | {
        "event_type": "instance.interface_detach.end"})
    assert addresses(detach) == ["10.20.7.6", "2001:db8:20::7:6"]


def update(v: Dict[str, Any], hostname: str, **data: Any) -> Dict[str, Any]:
    body = samples.vary("instance-update", v["uuid"], hostname, v["fixed"], task_state=None,
                        **data)
    return body


def test_rename_and_hostname_change_are_network_events(state: State) -> None:
    v = vm(8)
    created(state, v)
    quiet = run(state, update(v, "vm-8"))
    assert quiet.events == () and "state change only" in quiet.ignored
    renamed = run(state, update(v, "vm-8b", old_display_name="vm-8"))
    assert renamed.events[0].kind == "network" and renamed.events[0].hostname == "vm-8b"
    changed = run(state, update(v, "vm-8c"))
    assert changed.events[0].hostname == "vm-8c"
    busy = run(state, samples.vary("instance-update", v["uuid"], "vm-8d", v["fixed"]))
    assert busy.events == () and "task running" in busy.ignored


def test_update_for_an_unknown_vm_without_rename_is_ignored(state: State) -> None:
    plan = run(state, update(vm(9), "vm-9"))
    assert plan.events == () and "has not seen registered" in plan.ignored


def test_legacy_payload_floating_ip_matched_by_fixed_address(state: State) -> None:
    uuid = str(uuidlib.uuid4())
    run(state, samples.legacy_create_end(uuid, "legacy-10", [("10.20.7.10", "fa:16:3e:00:00:10")]))
    plan = run(state, samples.floatingip("floatingip.create.end", "fip-10", "192.168.1.80",
                                         str(uuidlib.uuid4()), "10.20.7.10"))
    assert plan.events[0].uuid == uuid and addresses(plan) == ["10.20.7.10", "192.168.1.80"]


def test_floating_ip_deleted(state: State) -> None:
    v = vm(11)
    created(state, v)
    run(state, samples.floatingip("floatingip.create.end", "fip-11", "192.168.1.81", v["port"],
                                  "10.20.7.11"))
    plan = run(state, samples.floatingip("floatingip.delete.end", "fip-11", "192.168.1.81",
                                         v["port"], "10.20.7.11"))
    assert addresses(plan) == ["10.20.7.11", "2001:db8:20::7:b"]
    assert state.floating("fip-11") is None
