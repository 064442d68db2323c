"""The inventory contract as one test class; each inventory driver's tests subclass it.

A subclass provides five fixtures: ``inventory`` (the driver under test, with
``on_delete = delete``), ``inventory_decommissioning`` (the same with
``on_delete = decommission``), ``inventory_reader`` (reads the inventory
directly, never through the driver), ``inventory_bad_credentials`` (the driver
with a wrong token) and ``inventory_unreachable`` (the driver pointed at a
closed port).
"""

import abc
from typing import Any

import pytest

from novahooks.event import Address, InstanceEvent
from tasks.backends.inventory.base import (InventoryDeregistered, InventoryHeld,
                                           InventoryRegistered)
from tasks.errors import AuthFailed, BackendUnavailable
from tests.conftest import mac, make_event, unique_v4
from tests.tasks.backends.reader import HeldReader
from tests.tasks.backends.shapes import assert_shape


class InventoryReader(HeldReader):
    """``held``: the instance's records, ``{"name": ..., "status": ...}`` each."""

    @abc.abstractmethod
    def forget(self, instance_uuid: str) -> None:
        """Remove the instance's records as an admin would (after a decommission)."""


def registered(inventory: Any) -> InstanceEvent:
    """A VM with no addresses yet, registered."""
    ev = make_event(addresses=[])
    inventory.register(ev)
    return ev


class InventoryContract(object):
    def test_register_creates_one_record_then_keeps_it_current(
            self, inventory: Any, inventory_reader: InventoryReader) -> None:
        planned = make_event("create", addresses=None, vm_state="building")
        assert inventory.register(planned)["action"] == "created"
        assert inventory_reader.held(planned.uuid) == [{"name": planned.hostname,
                                                           "status": "planned"}]
        built = planned._replace(kind="build", vm_state="active",
                                 addresses=[Address(unique_v4(), 4, mac(), "private")])
        assert inventory.register(built)["action"] in ("updated", "unchanged")
        assert inventory.register(built)["action"] in ("updated", "unchanged")
        inventory.register(planned)
        assert inventory_reader.held(planned.uuid) == [{"name": planned.hostname,
                                                           "status": "active"}], \
            "a late pre-boot event must not make the VM planned again"
        assert inventory.describe(planned.uuid)
        held = inventory.managed()[planned.uuid]
        assert (held["name"], held["status"]) == (planned.hostname, "active")
        assert inventory.deregister(built)["action"] == "deleted"
        assert inventory_reader.held(planned.uuid) == []
        assert inventory.deregister(built).get("action") is None  # absent is success
        assert inventory.describe(planned.uuid) == {}
        assert planned.uuid not in inventory.managed()

    def test_each_verb_answers_in_the_shape_the_contract_declares(
            self, inventory: Any, inventory_decommissioning: Any) -> None:
        ev = make_event(addresses=[Address(unique_v4(), 4, mac(), "private")])
        made = assert_shape(inventory.register(ev), InventoryRegistered)
        assert assert_shape(inventory.register(ev), InventoryRegistered)["id"] == made["id"]
        held = assert_shape(inventory.describe(ev.uuid), InventoryHeld)
        assert (held["id"], held["name"], held["status"]) == (made["id"], ev.hostname, "active")
        marked = assert_shape(inventory_decommissioning.deregister(ev), InventoryDeregistered)
        assert (marked["id"], marked["action"]) == (made["id"], "decommissioned")
        assert assert_shape(inventory.deregister(ev), InventoryDeregistered)["id"] == made["id"]
        assert assert_shape(inventory.deregister(ev), InventoryDeregistered)["id"] is None
        assert assert_shape(inventory.describe(ev.uuid), InventoryHeld) == {}

    def test_a_rename_keeps_one_record(self, inventory: Any,
                                       inventory_reader: InventoryReader) -> None:
        ev = registered(inventory)
        renamed = ev._replace(hostname=str(ev.hostname) + "-renamed")
        inventory.register(renamed)
        assert [r["name"] for r in inventory_reader.held(ev.uuid)] == [renamed.hostname]
        inventory.deregister(renamed)

    def test_a_record_someone_deleted_is_made_again(
            self, inventory: Any, inventory_reader: InventoryReader) -> None:
        ev = registered(inventory)
        inventory_reader.forget(ev.uuid)
        assert inventory.register(ev)["action"] == "created"
        assert [r["name"] for r in inventory_reader.held(ev.uuid)] == [ev.hostname]
        inventory.deregister(ev)

    def test_decommission_keeps_the_record_marked(
            self, inventory_decommissioning: Any, inventory_reader: InventoryReader) -> None:
        ev = registered(inventory_decommissioning)
        assert inventory_decommissioning.deregister(ev)["action"] == "decommissioned"
        (record,) = inventory_reader.held(ev.uuid)
        assert record["name"] == ev.hostname and record["status"] not in ("active", "planned")
        inventory_reader.forget(ev.uuid)

    def test_a_record_of_another_instance_is_never_taken_for_ours(
            self, inventory: Any, inventory_reader: InventoryReader) -> None:
        other, ev = make_event(addresses=[]), make_event(addresses=[])
        inventory.register(other)
        assert inventory.describe(ev.uuid) == {}
        assert inventory.deregister(ev).get("action") is None
        assert [r["name"] for r in inventory_reader.held(other.uuid)] == [other.hostname]
        inventory.deregister(other)

    def test_check_reaches_the_inventory(self, inventory: Any) -> None:
        assert "accepted" in inventory.check()

    def test_wrong_credentials_are_an_auth_failure(
            self, inventory_bad_credentials: Any, inventory_reader: InventoryReader) -> None:
        ev = make_event(addresses=[])
        with pytest.raises(AuthFailed):
            inventory_bad_credentials.register(ev)
        assert inventory_reader.held(ev.uuid) == []

    def test_unreachable_inventory_is_transient(self, inventory_unreachable: Any) -> None:
        with pytest.raises(BackendUnavailable):
            inventory_unreachable.register(make_event(addresses=[]))
