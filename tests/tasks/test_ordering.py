"""The newest state wins: one VM's events racing through chains of different lengths.

Events go through the session stack's outbox, relay and worker pools to the real BIND,
slapd and NetBox, in the orders a backlog, a retry or a redelivery produces. Every
assertion asks the servers (DNS queries, an LDAP search, NetBox's API).
"""

import json
import time
import uuid as uuidlib
from typing import Any, Dict, List

import pytest

from novahooks.event import Address, Flavor, InstanceEvent
from novahooks.nova.outbox import Outbox
from tests.servers.stack import Stack
from tasks.simulate import Vm
from tests.conftest import mac, make_event, unique_v4
from tests.helpers import audit_lines, until

SMALL = Flavor(name="m1.small", vcpus=1, memory_mb=512, root_gb=20, ephemeral_gb=0, swap=0)
LARGE = Flavor(name="m1.large", vcpus=4, memory_mb=8192, root_gb=80, ephemeral_gb=0, swap=0)

pytestmark = pytest.mark.usefixtures("processes")


def enqueue(stack: Stack, *events: InstanceEvent) -> None:
    """As the hooks and the listener do: the outbox, which the session relay publishes."""
    outbox = Outbox(str(stack.outbox_path))
    for event in events:
        outbox.append(event.uuid, event.kind, event.to_json())
    outbox.close()


def done(stack: Stack, event: InstanceEvent) -> List[Dict[str, Any]]:
    return [r for r in audit_lines(stack.audit_path, event.uuid)
            if r.get("event_id") == event.event_id and r.get("stage") == "done"]


def held(event: InstanceEvent) -> Dict[str, Any]:
    from tests.demo import holdings
    return holdings(Vm(event.hostname or "", tuple((a.address, a.mac or "")
                                                 for a in event.addresses or []),
                       uuid=event.uuid))


def step_lines(stack: Stack, event: InstanceEvent, pools: Any) -> Dict[str, Dict[str, Any]]:
    """The event's step log lines (JSON) in these pools' worker logs, by step."""
    lines = [json.loads(line) for name in pools
             for line in (stack.workdir / "logs" / ("worker-%s.log" % name))
             .read_text().splitlines() if line.startswith("{") and event.event_id in line]
    steps = {line["step"]: line for line in lines if line.get("step")}
    return steps if len(steps) == len(pools) else {}


def assert_newest(stack: Stack, newest: InstanceEvent, stale_name: str) -> None:
    """Every backend holds ``newest``: its name, its flavor; nothing under the stale name."""
    state = held(newest)
    address = newest.addresses[0].address
    assert state["dns"]["A"] == [address]
    assert state["dns"]["PTR"] == {address: ["%s.%s." % (newest.hostname, "cloud.example.test")]}
    assert state["ldap"] == ["cn=%s,%s" % (newest.hostname, stack.slapd.hosts_base)]
    inventory = state["inventory"]
    assert inventory["name"] == newest.hostname
    assert (inventory["vcpus"], inventory["memory"]) == (newest.flavor.vcpus,
                                                         newest.flavor.memory_mb)
    stale = held(newest._replace(hostname=stale_name))
    assert stale["dns"]["A"] == [] and stale["dns"]["AAAA"] == []


def test_an_old_event_delivered_after_a_newer_one_changes_nothing(stack: Stack) -> None:
    """A redelivered or long-retried old event: its steps see the newer version and say so."""
    new = make_event(hostname=None, flavor=LARGE,
                     addresses=[Address(unique_v4(), 4, mac(), "private")])
    new = new._replace(hostname="ord-new-" + new.uuid[:6])
    # its hook ran 30 s earlier: a message that waited on a dead worker, or retried that long
    old = new._replace(hostname="ord-old-" + new.uuid[:6], flavor=SMALL,
                       event_id=str(uuidlib.uuid4()), emitted_at=new.emitted_at - 30.0)
    enqueue(stack, new)
    until(lambda: done(stack, new), 120, "the newer event's chain")
    enqueue(stack, old)
    (record,) = until(lambda: done(stack, old), 120, "the older event's chain")
    assert_newest(stack, new, old.hostname or "")
    skipped = record["skipped"]
    assert sorted(skipped) == ["dns.register", "inventory.register", "ipam.reserve",
                               "ldap.register"]
    for reason in skipped.values():
        assert reason.startswith("skipped: superseded by %s (" % new.event_id), reason
    steps = until(lambda: step_lines(stack, old, ("ldap", "inventory")), 30, "log lines")
    for step in ("ldap.register", "inventory.register"):
        assert steps[step]["outcome"] == "skipped"
        assert steps[step]["skipped"].startswith("superseded by %s" % new.event_id)


def test_create_and_resize_back_to_back_keep_the_resized_flavor(stack: Stack) -> None:
    """The five-step build chain and the two-step resize chain race to NetBox."""
    build = make_event(flavor=SMALL, addresses=[Address(unique_v4(), 4, mac(), "private")])
    resize = build._replace(kind="resize", flavor=LARGE, event_id=str(uuidlib.uuid4()),
                            emitted_at=build.emitted_at + 0.5)
    enqueue(stack, build, resize)
    until(lambda: done(stack, build) and done(stack, resize), 120, "both chains")
    assert_newest(stack, resize, "none-" + build.uuid[:6])


def test_rename_then_resize_back_to_back(stack: Stack) -> None:
    build = make_event(flavor=SMALL, addresses=[Address(unique_v4(), 4, mac(), "private")])
    renamed = build._replace(kind="network", hostname=build.hostname + "-r",
                             event_id=str(uuidlib.uuid4()), emitted_at=build.emitted_at + 0.4)
    resized = renamed._replace(kind="resize", flavor=LARGE, event_id=str(uuidlib.uuid4()),
                               emitted_at=build.emitted_at + 0.8)
    enqueue(stack, build, renamed, resized)
    try:
        until(lambda: all(done(stack, e) for e in (build, renamed, resized)), 150,
              "three chains")
    except AssertionError as exc:
        raise AssertionError("%s; audit: %s" % (
            exc, audit_lines(stack.audit_path, build.uuid))) from None
    assert_newest(stack, resized, build.hostname or "")


def test_the_same_event_twice_in_the_outbox_is_one_chain(stack: Stack) -> None:
    """A listener killed between appending and acknowledging appends the notification's
    event again (same event id): the relay publishes one chain."""
    event = make_event(flavor=SMALL, addresses=[Address(unique_v4(), 4, mac(), "private")])
    enqueue(stack, event)
    until(lambda: done(stack, event), 120, "the chain")
    enqueue(stack, event)
    second = make_event(flavor=SMALL, addresses=[Address(unique_v4(), 4, mac(), "private")])
    enqueue(stack, second)
    until(lambda: done(stack, second), 120, "a later event's chain")
    time.sleep(1.0)
    assert len(done(stack, event)) == 1


def test_hook_events_carry_their_call_time_and_outbox_sequence(stack: Stack) -> None:
    """The relay puts the order in: the hook's wall clock and the outbox sequence."""
    event = make_event(kind="create", flavor=SMALL)
    enqueue(stack, event)
    until(lambda: done(stack, event), 120, "the chain")
    from tasks.ledger import ledger
    from tasks.config import settings
    book = ledger(settings().ledger.url)
    applied = book.register_state(event.uuid, "directory")[1]
    assert applied is not None and applied.event_id == event.event_id
    assert applied.order[0] == round(event.emitted_at * 1000000) and applied.order[1] > 0


def test_register_steps_after_a_delete_are_skipped_and_say_why(stack: Stack) -> None:
    """The tombstone rule, whatever the order: a build that loses the race to its delete
    leaves nothing, and its steps log outcome skipped (not ok) with the reason."""
    build = make_event(flavor=SMALL, addresses=[Address(unique_v4(), 4, mac(), "private")])
    delete = build._replace(kind="delete", event_id=str(uuidlib.uuid4()),
                            emitted_at=build.emitted_at - 5.0)  # even an "older" delete
    enqueue(stack, delete)
    until(lambda: done(stack, delete), 120, "the delete's chain")
    enqueue(stack, build)
    (record,) = until(lambda: done(stack, build), 120, "the build's chain")
    assert sorted(record["skipped"]) == ["dns.register", "inventory.register",
                                         "ipam.reserve", "ldap.register"]
    assert all(r == "skipped: instance %s was deleted" % build.uuid
               for r in record["skipped"].values())
    steps = until(lambda: step_lines(stack, build, ("ldap", "inventory")), 30, "log lines")
    assert {s["outcome"] for s in steps.values()} == {"skipped"}
    from tests.demo import gone
    vm = Vm(build.hostname or "", ((build.addresses[0].address, build.addresses[0].mac or ""),),
            uuid=build.uuid)
    assert gone(vm, held(build))
