"""The IPAM contract as one test class; each IPAM driver's tests subclass it.

A subclass provides four fixtures: ``ipam`` (the driver under test, configured
for a backend whose prefixes cover 10.20.0.0/16 and 2001:db8:20::/64 and not
172.30.0.0/16), ``ipam_reader`` (reads the backend directly, never through the
driver), ``ipam_bad_credentials`` (the driver with a wrong secret) and
``ipam_unreachable`` (the driver pointed at a closed port).
"""

import abc
from typing import Any, List

import pytest

from novahooks.event import Address
from tasks.backends.ipam.base import IpamEnsured, IpamHeld, IpamReleased
from tasks.errors import AuthFailed, BackendUnavailable, Conflict, OutOfScope
from tests.conftest import mac, make_event, unique_v4, unique_v6
from tests.tasks.backends.shapes import assert_shape


class IpamReader(abc.ABC):
    """What the backend itself holds, read without the driver under test."""

    @abc.abstractmethod
    def held(self, instance_uuid: str) -> List[str]:
        """Sorted plain addresses recorded for the instance."""

    @abc.abstractmethod
    def name_of(self, address: str) -> str:
        """The DNS name recorded with the address."""


class IpamContract(object):
    def test_ensure_records_each_address_with_its_name(
            self, ipam: Any, ipam_reader: IpamReader) -> None:
        v4, v6 = unique_v4(), unique_v6()
        ev = make_event(addresses=[Address(v4, 4, mac()), Address(v6, 6, mac())])
        first = ipam.ensure(ev.uuid, "c-a.cloud.example.test", ev.addresses)
        assert first["created"] == sorted([v4, v6])
        again = ipam.ensure(ev.uuid, "c-a.cloud.example.test", ev.addresses)
        assert again["created"] == [] and again["released"] == []
        assert ipam_reader.held(ev.uuid) == sorted([v4, v6])
        assert ipam_reader.name_of(v4) == "c-a.cloud.example.test"
        described = ipam.describe(ev.uuid)["addresses"]
        assert sorted(str(a).split("/")[0] for a in described) == sorted([v4, v6])
        ipam.release(ev.uuid)

    def test_each_verb_answers_in_the_shape_the_contract_declares(self, ipam: Any) -> None:
        kept, dropped = unique_v4(), unique_v4()
        ev = make_event(addresses=[Address(kept, 4, mac()), Address(dropped, 4, mac())])
        made = assert_shape(ipam.ensure(ev.uuid, "c-s.cloud.example.test", ev.addresses),
                            IpamEnsured)
        assert_shape(ipam.ensure_with(ev.uuid, "c-s.cloud.example.test", ev.addresses[:1],
                                      made), IpamEnsured)
        assert_shape(ipam.describe(ev.uuid), IpamHeld)
        assert assert_shape(ipam.release(ev.uuid), IpamReleased)["released"] == [kept]
        assert assert_shape(ipam.release_with(ev.uuid, {}), IpamReleased)["released"] == []
        assert assert_shape(ipam.describe(ev.uuid), IpamHeld)["addresses"] == []

    def test_ensure_releases_addresses_the_instance_no_longer_has(
            self, ipam: Any, ipam_reader: IpamReader) -> None:
        first, second = unique_v4(), unique_v4()
        ev = make_event(addresses=[Address(first, 4), Address(second, 4)])
        ipam.ensure(ev.uuid, "c-b.cloud.example.test", ev.addresses)
        result = ipam.ensure(ev.uuid, "c-b.cloud.example.test", [Address(second, 4)])
        assert result["released"] == [first]
        assert ipam_reader.held(ev.uuid) == [second]
        assert ipam.release(ev.uuid)["released"] == [second]
        assert ipam_reader.held(ev.uuid) == []
        assert ipam.release(ev.uuid)["released"] == []

    def test_address_outside_every_prefix_writes_nothing(
            self, ipam: Any, ipam_reader: IpamReader) -> None:
        ev = make_event(addresses=[Address(unique_v4(), 4), Address("172.30.1.1", 4)])
        with pytest.raises(OutOfScope, match="172.30.1.1"):
            ipam.ensure(ev.uuid, "c-c.cloud.example.test", ev.addresses)
        assert ipam_reader.held(ev.uuid) == []

    def test_address_held_by_another_instance_is_conflict(
            self, ipam: Any, ipam_reader: IpamReader) -> None:
        shared = unique_v4()
        first, second = make_event(), make_event()
        ipam.ensure(first.uuid, "c-d.cloud.example.test", [Address(shared, 4)])
        with pytest.raises(Conflict, match=first.uuid):
            ipam.ensure(second.uuid, "c-e.cloud.example.test", [Address(unique_v4(), 4),
                                                                Address(shared, 4)])
        assert ipam_reader.held(second.uuid) == []
        assert ipam_reader.held(first.uuid) == [shared]
        ipam.release(first.uuid)

    def test_preflight_refuses_what_ensure_would_and_writes_nothing(
            self, ipam: Any, ipam_reader: IpamReader) -> None:
        """The chain's first writer (dns.register) asks it: IPAM writes third."""
        shared, fresh = unique_v4(), unique_v4()
        first, second = make_event(), make_event()
        ipam.ensure(first.uuid, "c-p.cloud.example.test", [Address(shared, 4)])
        assert ipam.preflight(first.uuid, "c-p.cloud.example.test",
                              [Address(shared, 4), Address(unique_v4(), 4)]) is None
        assert ipam.preflight(second.uuid, "c-q.cloud.example.test", [Address(fresh, 4)]) is None
        with pytest.raises(Conflict, match=first.uuid):
            ipam.preflight(second.uuid, "c-q.cloud.example.test",
                           [Address(fresh, 4), Address(shared, 4)])
        with pytest.raises(OutOfScope, match="172.30.1.1"):
            ipam.preflight(second.uuid, "c-q.cloud.example.test",
                           [Address(fresh, 4), Address("172.30.1.1", 4)])
        assert ipam_reader.held(second.uuid) == []
        assert ipam_reader.held(first.uuid) == [shared]
        ipam.release(first.uuid)
        assert ipam.preflight(second.uuid, "c-q.cloud.example.test",
                              [Address(fresh, 4), Address(shared, 4)]) is None

    def test_managed_lists_every_instance_with_its_addresses(self, ipam: Any) -> None:
        v4 = unique_v4()
        ev = make_event(addresses=[Address(v4, 4)])
        ipam.ensure(ev.uuid, "c-f.cloud.example.test", ev.addresses)
        held = ipam.managed()
        assert held[ev.uuid]["addresses"] == [v4]
        ipam.release(ev.uuid)
        assert ev.uuid not in ipam.managed()

    def test_check_reaches_the_backend(self, ipam: Any) -> None:
        assert "accepted" in ipam.check()

    def test_wrong_credentials_are_an_auth_failure(self, ipam_bad_credentials: Any) -> None:
        with pytest.raises(AuthFailed):
            ipam_bad_credentials.ensure(make_event().uuid, "x.cloud.example.test",
                                        [Address(unique_v4(), 4)])

    def test_unreachable_backend_is_transient(self, ipam_unreachable: Any) -> None:
        with pytest.raises(BackendUnavailable):
            ipam_unreachable.ensure(make_event().uuid, "x.cloud.example.test",
                                    [Address(unique_v4(), 4)])

    def test_the_last_runs_note_stands_in_for_a_search(
            self, ipam: Any, ipam_reader: IpamReader) -> None:
        """What the steps do: each run gets the ledger's note of the one before."""
        first, second = unique_v4(), unique_v4()
        ev = make_event()
        note = ipam.ensure_with(ev.uuid, "c-g.cloud.example.test", [Address(first, 4)], None)
        note = ipam.ensure_with(ev.uuid, "c-g.cloud.example.test",
                                [Address(first, 4), Address(second, 4)], note)
        assert note["created"] == [second]
        assert ipam_reader.held(ev.uuid) == sorted([first, second])
        note = ipam.ensure_with(ev.uuid, "c-h.cloud.example.test", [Address(second, 4)], note)
        assert note["released"] == [first] and note["updated"] == [second]
        assert ipam_reader.held(ev.uuid) == [second]
        assert ipam_reader.name_of(second) == "c-h.cloud.example.test"
        assert ipam.release_with(ev.uuid, note)["released"] == [second]
        assert ipam_reader.held(ev.uuid) == []
        assert ipam.release_with(ev.uuid, note)["released"] == []
