"""Decisions that depend on what the listener learnt before, on a real SQLite state.

Each helper call does what the listener does after the events are durable:
it applies the plan's effects to the state.
"""

import subprocess
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from novahooks.notifications import message
from novahooks.notifications.plan import Plan, decide
from tasks.notifications.store import State
from tests.novahooks.notifications import samples


@pytest.fixture
def state(tmp_path: Path) -> State:
    return State("sqlite:///%s" % (tmp_path / "ledger.sqlite"))


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[State]:
    """Several listeners on one queue share their state in PostgreSQL."""
    if request.param == "sqlite":
        yield State("sqlite:///%s" % (tmp_path / "ledger.sqlite"))
        return
    name = "novahooks_state_%s" % uuidlib.uuid4().hex[:8]
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
    try:
        state = State("postgresql://postgres@127.0.0.1:5432/%s" % name)
        yield state
        state.engine.dispose()
    finally:
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--force", name],
                       check=True)


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


def at(body: Dict[str, Any], stamp: str, event_type: str = "") -> Dict[str, Any]:
    """The notification with its own timestamp (and another event type)."""
    return dict(body, timestamp=stamp, **({"event_type": event_type} if event_type else {}))


def legacy(v: Dict[str, Any], event_type: str, hostname: str = "", **payload: Any) -> Dict[
        str, Any]:
    body = samples.legacy_create_end(v["uuid"], hostname or v["hostname"],
                                     [(a, m) for a, m, _ in v["fixed"]])
    body["event_type"] = event_type
    body["payload"].update(payload)
    return body


def test_a_notification_handled_once_is_not_handled_again(shared_state: State) -> None:
    """Redelivered after a crash, or published twice: one event, whatever came between."""
    state = shared_state
    v = vm(20)
    body = at(samples.vary("instance-create-end", v["uuid"], "vm-20", v["fixed"]),
              "2026-12-01 10:00:00.000000")
    first = run(state, body)
    renamed = run(state, at(update(v, "vm-20b", old_display_name="vm-20"),
                            "2026-12-01 10:00:05.000000"))
    assert [e.hostname for e in first.events + renamed.events] == ["vm-20", "vm-20b"]
    again = run(state, body)
    assert again.events == () and "handled already" in again.ignored
    assert body["message_id"] in again.ignored
    assert state.known(v["uuid"]).hostname == "vm-20b", "the redelivery changed nothing"


def test_versioned_and_legacy_twins_of_one_action_are_one_event(shared_state: State) -> None:
    """notification_format = both: whichever twin comes first is used, the other ignored;
    two actions of one kind, each with its twins, stay two events."""
    state = shared_state
    v = vm(21)
    plans = [run(state, body) for body in (
        at(legacy(v, "compute.instance.create.end"), "2026-12-01 11:00:00.001000"),
        at(samples.vary("instance-create-end", v["uuid"], "vm-21", v["fixed"]),
           "2026-12-01 11:00:00.004000"),
        at(samples.vary("instance-resize_finish-end", v["uuid"], "vm-21", v["fixed"]),
           "2026-12-01 11:00:30.000000"),
        at(legacy(v, "compute.instance.finish_resize.end"), "2026-12-01 11:00:30.002000"),
        at(legacy(v, "compute.instance.finish_resize.end"), "2026-12-01 11:00:33.000000"),
        at(samples.vary("instance-resize_finish-end", v["uuid"], "vm-21", v["fixed"]),
           "2026-12-01 11:00:33.001000"),
        at(legacy(v, "compute.instance.delete.end", fixed_ips=[]),
           "2026-12-01 11:01:00.000000"),
        at(samples.vary("instance-delete-end", v["uuid"], "vm-21"),
           "2026-12-01 11:01:00.003000"),
    )]
    assert [[e.kind for e in p.events] for p in plans] == [
        ["build"], [], ["resize"], [], ["resize"], [], ["delete"], []]
    for plan in plans[1::2]:
        assert "twin of" in plan.ignored and "one event per Nova action" in plan.ignored
    # the legacy delete.end kept the addresses for the versioned one's twin: nothing lost
    assert addresses(plans[6]) == ["10.20.7.21", "2001:db8:20::7:15"]


def test_one_format_alone_pairs_nothing(state: State) -> None:
    """Nova's default (unversioned only): every action is its own event."""
    v = vm(22)
    run(state, at(legacy(v, "compute.instance.create.end"), "2026-12-01 12:00:00.000000"))
    first = run(state, at(legacy(v, "compute.instance.update", hostname="vm-22b",
                                 old_display_name="vm-22"), "2026-12-01 12:00:01.000000"))
    second = run(state, at(legacy(v, "compute.instance.update", hostname="vm-22c",
                                  old_display_name="vm-22b"), "2026-12-01 12:00:01.500000"))
    assert [e.hostname for e in first.events + second.events] == ["vm-22b", "vm-22c"]


def test_rename_no_event_announced_shows_on_the_next_notification(state: State) -> None:
    """notify_on_state_change unset: Nova sends nothing for a rename; the next
    notification carrying the instance has the new name, and moves the records."""
    v = vm(23)
    created(state, v)
    resized = run(state, samples.vary("instance-resize_finish-end", v["uuid"], "vm-23b",
                                      v["fixed"]))
    assert resized.events[0].kind == "network" and resized.events[0].hostname == "vm-23b"
    off = samples.vary("instance-power_off-end", v["uuid"], "vm-23c", v["fixed"],
                       task_state=None)
    plan = run(state, off)
    assert plan.events[0].kind == "network" and plan.events[0].hostname == "vm-23c"
    assert addresses(plan) == ["10.20.7.23", "2001:db8:20::7:17"]
    quiet = run(state, samples.vary("instance-power_off-end", v["uuid"], "vm-23c", v["fixed"],
                                    task_state=None))
    assert quiet.events == () and "changes nothing registered" in quiet.ignored
    shown = samples.vary("instance-power_off-end", v["uuid"], "vm-23c", v["fixed"],
                         task_state=None)
    shown["payload"]["nova_object.data"]["display_name"] = "Web 23"
    assert run(state, shown).events[0].display_name == "Web 23", "display name alone"
    legacy_off = run(state, legacy(v, "compute.instance.power_off.end", hostname="vm-23d"))
    assert legacy_off.events[0].kind == "network" and legacy_off.events[0].hostname == "vm-23d"


def test_resize_end_with_the_old_flavor_is_ignored(state: State) -> None:
    v = vm(24)
    created(state, v)
    for body in (samples.vary("instance-resize-end", v["uuid"], "vm-24b", v["fixed"]),
                 legacy(v, "compute.instance.resize.end", hostname="vm-24b")):
        plan = run(state, body)
        assert plan.events == () and "the new flavor and host come with" in plan.ignored


def test_shelve_offload_marks_the_vm_offloaded_and_keeps_its_addresses(state: State) -> None:
    v = vm(25)
    created(state, v)
    body = samples.vary("instance-power_off-end", v["uuid"], "vm-25", [], task_state=None,
                        state="shelved_offloaded", host=None, node=None)
    body["event_type"] = "instance.shelve_offload.end"
    (event,) = run(state, body).events
    assert event.kind == "resize" and event.vm_state == "shelved_offloaded"
    assert event.host is None
    assert [a.address for a in event.addresses] == ["10.20.7.25", "2001:db8:20::7:19"]
    back = samples.vary("instance-resize_finish-end", v["uuid"], "vm-25", v["fixed"],
                        state="active")
    back["event_type"] = "instance.unshelve.end"
    (event,) = run(state, back).events
    assert event.kind == "resize" and event.vm_state == "active" and event.host


def test_handled_message_ids_and_twins_are_pruned_after_the_retention(tmp_path: Path) -> None:
    state = State("sqlite:///%s" % (tmp_path / "ledger.sqlite"), retention=0.05)
    v = vm(26)
    body = at(samples.vary("instance-create-end", v["uuid"], "vm-26", v["fixed"]),
              "2026-12-01 13:00:00.000000")
    run(state, body)
    assert state.seen(body["message_id"]) is not None
    twin = at(legacy(v, "compute.instance.create.end"), "2026-12-01 13:00:00.002000")
    time.sleep(0.1)
    state._pruned = 0.0  # the next write prunes (at most once a minute otherwise)
    run(state, samples.floatingip("floatingip.create.end", "fip-26", "192.168.1.86", None, None))
    assert state.seen(body["message_id"]) is None
    assert [e.kind for e in run(state, twin).events] == ["build"], "its twin was forgotten too"
