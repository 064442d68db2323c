"""The directory contract as one test class; each directory driver's tests subclass it.

A subclass provides four fixtures: ``directory`` (the driver under test),
``directory_reader`` (reads the
server directly, never through the driver), ``directory_bad_credentials``
(the driver with a wrong password) and ``directory_unreachable`` (the driver
pointed at a closed port); and may override ``directory_event`` (makes the events
that driver registers; a Windows VM's for Active Directory's computer objects).
"""

import abc
from typing import Any, Protocol

import pytest

from novahooks.event import Address, InstanceEvent
from tasks.backends.directory.base import (DirectoryDeregistered, DirectoryHeld,
                                           DirectoryRegistered)
from tasks.errors import AuthFailed, BackendUnavailable, Conflict
from tests.conftest import mac, make_event, unique_v4, unique_v6
from tests.tasks.backends.reader import HeldReader
from tests.tasks.backends.shapes import assert_shape


class EventMaker(Protocol):
    def __call__(self, **fields: Any) -> InstanceEvent: ...


class DirectoryReader(HeldReader):
    """``held``: the instance's entries, ``{"name": host name in lower case, "addresses":
    sorted}`` each."""

    @abc.abstractmethod
    def plant(self, hostname: str) -> None:
        """An entry of that name as a person would make it: no instance's UUID on it."""


class DirectoryContract(object):
    @pytest.fixture
    def directory_event(self) -> EventMaker:
        return make_event

    def test_register_makes_one_entry_and_a_build_adds_its_addresses(
            self, directory: Any, directory_event: EventMaker,
            directory_reader: DirectoryReader) -> None:
        created = directory_event(kind="create", addresses=None, vm_state="building")
        assert directory.register(created)["action"] == "added"
        name = str(created.hostname).lower()
        assert directory_reader.held(created.uuid) == [{"name": name, "addresses": []}]
        v4, v6, nic = unique_v4(), unique_v6(), mac()
        built = created._replace(kind="build", addresses=[Address(v4, 4, nic),
                                                          Address(v6, 6, nic)])
        assert directory.register(built)["action"] == "updated"
        directory.register(built)
        directory.register(created)  # a late pre-boot event keeps the addresses
        assert directory_reader.held(created.uuid) == [{"name": name,
                                                        "addresses": sorted([v4, v6])}]
        assert len(directory.describe(created.uuid)["entries"]) == 1
        held = directory.managed()[created.uuid]
        assert held["hostname"] == name and held["addresses"] == sorted([v4, v6])
        directory.deregister(built)

    def test_each_verb_answers_in_the_shape_the_contract_declares(
            self, directory: Any, directory_event: EventMaker) -> None:
        ev = directory_event(addresses=[Address(unique_v4(), 4, mac())])
        added = assert_shape(directory.register(ev), DirectoryRegistered)
        again = assert_shape(directory.register(ev), DirectoryRegistered)
        assert (added["action"], again["action"], again["dn"]) == ("added", "updated", added["dn"])
        assert assert_shape(directory.describe(ev.uuid), DirectoryHeld)["entries"] == [added["dn"]]
        removed = assert_shape(directory.deregister(ev), DirectoryDeregistered)["removed"]
        assert removed == [added["dn"]]
        assert assert_shape(directory.deregister(ev), DirectoryDeregistered)["removed"] == []

    def test_a_rename_moves_the_entry(self, directory: Any, directory_event: EventMaker,
                                      directory_reader: DirectoryReader) -> None:
        ev = directory_event(addresses=[Address(unique_v4(), 4, mac())])
        directory.register(ev)
        renamed = ev._replace(hostname=str(ev.hostname) + "-new")
        directory.register(renamed)
        assert [e["name"] for e in directory_reader.held(ev.uuid)] == [
            str(renamed.hostname).lower()]
        directory.deregister(renamed)
        assert directory_reader.held(ev.uuid) == []

    def test_a_build_with_fewer_addresses_holds_exactly_those(
            self, directory: Any, directory_event: EventMaker,
            directory_reader: DirectoryReader) -> None:
        kept, dropped = unique_v4(), unique_v4()
        ev = directory_event(addresses=[Address(kept, 4, mac()), Address(dropped, 4, mac())])
        directory.register(ev)
        directory.register(ev._replace(addresses=[ev.addresses[0]]))
        assert [e["addresses"] for e in directory_reader.held(ev.uuid)] == [[kept]]
        directory.deregister(ev)

    def test_deregister_removes_every_entry_and_absent_is_success(
            self, directory: Any, directory_event: EventMaker,
            directory_reader: DirectoryReader) -> None:
        ev = directory_event(addresses=[Address(unique_v4(), 4, mac())])
        directory.register(ev)
        assert len(directory.deregister(ev)["removed"]) == 1
        assert directory_reader.held(ev.uuid) == []
        assert directory.deregister(ev) == {"removed": []}
        assert ev.uuid not in directory.managed()

    def test_a_name_another_instance_holds_is_a_conflict_and_stays_its_own(
            self, directory: Any, directory_event: EventMaker,
            directory_reader: DirectoryReader) -> None:
        first = directory_event(addresses=[])
        directory.register(first)
        second = directory_event(hostname=first.hostname, addresses=[])
        with pytest.raises(Conflict, match=first.uuid):
            directory.register(second)
        assert directory.deregister(second) == {"removed": []}
        assert directory_reader.held(second.uuid) == []
        assert len(directory_reader.held(first.uuid)) == 1
        directory.deregister(first)

    def test_preflight_refuses_a_name_another_instance_holds_and_writes_nothing(
            self, directory: Any, directory_event: EventMaker,
            directory_reader: DirectoryReader) -> None:
        first = directory_event(addresses=[])
        directory.register(first)
        assert directory.preflight(first) is None
        fresh = directory_event(addresses=[])
        assert directory.preflight(fresh) is None
        second = directory_event(hostname=first.hostname, addresses=[])
        with pytest.raises(Conflict):
            directory.preflight(second)
        assert directory_reader.held(second.uuid) == [] and directory_reader.held(fresh.uuid) == []
        directory.deregister(first)

    def test_a_name_a_person_made_is_a_conflict(
            self, directory: Any, directory_event: EventMaker,
            directory_reader: DirectoryReader) -> None:
        ev = directory_event(addresses=[])
        directory_reader.plant(str(ev.hostname))
        with pytest.raises(Conflict, match="no instance"):
            directory.register(ev)
        assert directory_reader.held(ev.uuid) == []

    def test_a_uuid_of_filter_characters_matches_nothing(
            self, directory: Any, directory_event: EventMaker,
            directory_reader: DirectoryReader) -> None:
        ev = directory_event(addresses=[])
        directory.register(ev)
        assert directory.deregister(ev._replace(uuid="*")) == {"removed": []}
        assert directory.describe("*")["entries"] == []
        assert len(directory_reader.held(ev.uuid)) == 1
        directory.deregister(ev)

    def test_check_reaches_the_directory(self, directory: Any) -> None:
        assert directory.check()

    def test_wrong_credentials_are_an_auth_failure(
            self, directory_bad_credentials: Any, directory_event: EventMaker,
            directory_reader: DirectoryReader) -> None:
        ev = directory_event(addresses=[])
        with pytest.raises(AuthFailed):
            directory_bad_credentials.register(ev)
        assert directory_reader.held(ev.uuid) == []

    def test_unreachable_directory_is_transient(self, directory_unreachable: Any,
                                                directory_event: EventMaker) -> None:
        with pytest.raises(BackendUnavailable):
            directory_unreachable.register(directory_event(addresses=[]))
