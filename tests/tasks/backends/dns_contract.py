"""The DNS contract as one test class; each DNS driver's tests subclass it.

A subclass provides five fixtures: ``dns`` (the driver under test), ``dns_space``
(a :class:`DnsSpace`: fresh names in the driver's zone and addresses in its
reverse zones), ``dns_reader`` (reads the server directly, never through the
driver), ``dns_bad_credentials`` (the driver with a secret the server does not
accept) and ``dns_unreachable`` (the driver pointed at a closed port).
"""

import abc
import re
import uuid
from typing import Any, Callable, List, Optional

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.tsigkeyring
import dns.update
import pytest

from novahooks.event import Address
from tasks.backends.dns.base import DnsDeregistered, DnsHeld, DnsRegistered
from tasks.errors import AuthFailed, BackendUnavailable, Conflict, OutOfScope
from tests.tasks.backends.shapes import assert_shape


class DnsSpace(object):
    """Where a test may write: fresh names and addresses no other test uses."""

    def __init__(self, zone: str, v4: Callable[[], str],
                 v6: Optional[Callable[[], str]] = None) -> None:
        self.zone = zone.rstrip(".")
        self.v4 = v4
        #: None where the server has no IPv6 reverse zone.
        self.v6 = v6
        self.outside_address = "172.16.5.5"
        self.outside_name = "c-%s.example.org" % uuid.uuid4().hex[:8]

    def name(self) -> str:
        return "c-%s.%s" % (uuid.uuid4().hex[:10], self.zone)

    def addresses(self) -> List[Address]:
        return [Address(self.v4(), 4)] + ([Address(self.v6(), 6)] if self.v6 else [])


class DnsReader(abc.ABC):
    """What the DNS server itself holds, read without the driver under test."""

    @abc.abstractmethod
    def forward(self, fqdn: str) -> List[str]:
        """Sorted A and AAAA addresses at the name."""

    @abc.abstractmethod
    def ptr(self, address: str) -> List[str]:
        """Sorted names (without the final dot) the address's PTR records point at."""

    @abc.abstractmethod
    def plant(self, fqdn: str, address: str) -> None:
        """An A record as a person would make it: no instance's marker or tag."""


class QueryReader(DnsReader):
    """Asks the server itself over TCP, as dig would; plants with an update of its own
    (signed with the server admin's key where the server wants one)."""

    def __init__(self, host: str, port: int, zone: str, key_name: Optional[str] = None,
                 key_secret: Optional[str] = None, key_algorithm: str = "hmac-sha256") -> None:
        self.host, self.port, self.zone = host, port, zone
        self.keyring = dns.tsigkeyring.from_text({key_name: key_secret}) \
            if key_name and key_secret else None
        self.key_name, self.key_algorithm = key_name, key_algorithm

    def ask(self, name: str, rdtype: str) -> List[str]:
        """The records of one type at one name, as the server answers them."""
        response = dns.query.tcp(dns.message.make_query(name, rdtype), self.host,
                                 port=self.port, timeout=3)
        return sorted(rd.to_text() for rrset in response.answer
                      if rrset.rdtype == dns.rdatatype.from_text(rdtype) for rd in rrset)

    def forward(self, fqdn: str) -> List[str]:
        return sorted(self.ask(fqdn, "A") + self.ask(fqdn, "AAAA"))

    def ptr(self, address: str) -> List[str]:
        return _bare(self.ask(dns.reversename.from_address(address).to_text(), "PTR"))

    def plant(self, fqdn: str, address: str) -> None:
        update = dns.update.UpdateMessage(self.zone, keyring=self.keyring,
                                          keyname=self.key_name,
                                          keyalgorithm=self.key_algorithm)
        update.add(fqdn + ".", 300, "A", address)
        response = dns.query.tcp(update, self.host, port=self.port, timeout=3)
        assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())


def _bare(names: List[str]) -> List[str]:
    """A name with and without its final dot is one name; drivers print either."""
    return sorted(n.rstrip(".").lower() for n in names)


def _uuid() -> str:
    return str(uuid.uuid4())


class DnsContract(object):
    def test_register_points_the_name_and_each_address_at_each_other(
            self, dns: Any, dns_space: DnsSpace, dns_reader: DnsReader) -> None:
        owner, fqdn, addresses = _uuid(), dns_space.name(), dns_space.addresses()
        plain = sorted(a.address for a in addresses)
        first = dns.register(fqdn, owner, addresses)
        assert first["fqdn"] == fqdn and first["addresses"] == plain
        dns.register(fqdn, owner, addresses)
        assert dns_reader.forward(fqdn) == plain
        for address in plain:
            assert dns_reader.ptr(address) == [fqdn]
        seen = dns.describe(fqdn, owner, plain)
        assert sorted(seen["A"] + seen["AAAA"]) == plain and seen["owned"] is True
        assert {a: _bare(names) for a, names in seen["PTR"].items()} == {a: [fqdn] for a in plain}
        assert dns.describe(fqdn, _uuid(), [])["owned"] is False
        dns.deregister(fqdn, owner, addresses)
        assert dns_reader.forward(fqdn) == []
        assert [dns_reader.ptr(a) for a in plain] == [[] for _ in plain]

    def test_each_verb_answers_in_the_shape_the_contract_declares(
            self, dns: Any, dns_space: DnsSpace) -> None:
        owner, fqdn, addresses = _uuid(), dns_space.name(), dns_space.addresses()
        plain = [a.address for a in addresses]
        assert_shape(dns.register(fqdn, owner, addresses), DnsRegistered)
        assert_shape(dns.register(fqdn, owner, addresses[:1]), DnsRegistered)  # one removed
        assert_shape(dns.describe(fqdn, owner, plain), DnsHeld)
        assert_shape(dns.deregister(fqdn, _uuid(), addresses), DnsDeregistered)  # not ours
        gone = assert_shape(dns.deregister(fqdn, owner, addresses), DnsDeregistered)
        assert gone["forward_removed"] is True and gone["fqdn"] == fqdn
        assert not assert_shape(dns.describe(fqdn, owner, plain), DnsHeld)["A"]

    def test_register_again_holds_exactly_the_new_addresses(
            self, dns: Any, dns_space: DnsSpace, dns_reader: DnsReader) -> None:
        owner, fqdn = _uuid(), dns_space.name()
        old, new = dns_space.v4(), dns_space.v4()
        dns.register(fqdn, owner, [Address(old, 4)])
        moved = dns.register(fqdn, owner, [Address(new, 4)])
        assert moved["removed"] == [old]
        assert dns_reader.forward(fqdn) == [new]
        assert dns_reader.ptr(old) == [] and dns_reader.ptr(new) == [fqdn]
        dns.deregister(fqdn, owner, [Address(new, 4)])

    def test_every_address_of_a_family_is_held_and_points_back(
            self, dns: Any, dns_space: DnsSpace, dns_reader: DnsReader) -> None:
        owner, fqdn = _uuid(), dns_space.name()
        addresses = sorted([dns_space.v4(), dns_space.v4(), dns_space.v4()])
        dns.register(fqdn, owner, [Address(a, 4) for a in addresses])
        assert dns_reader.forward(fqdn) == addresses
        assert [dns_reader.ptr(a) for a in addresses] == [[fqdn]] * 3
        dns.register(fqdn, owner, [Address(addresses[1], 4)])
        assert dns_reader.forward(fqdn) == [addresses[1]]
        assert [dns_reader.ptr(a) for a in addresses] == [[], [fqdn], []]
        dns.deregister(fqdn, owner, [])
        assert dns_reader.forward(fqdn) == [] and dns_reader.ptr(addresses[1]) == []

    def test_deregister_takes_back_only_what_the_instance_owns(
            self, dns: Any, dns_space: DnsSpace, dns_reader: DnsReader) -> None:
        mine, theirs = _uuid(), _uuid()
        my_name, their_name = dns_space.name(), dns_space.name()
        a, b = dns_space.v4(), dns_space.v4()
        dns.register(my_name, mine, [Address(a, 4)])
        dns.register(their_name, theirs, [Address(b, 4)])
        dns.deregister(their_name, mine, [Address(b, 4)])
        assert dns_reader.forward(their_name) == [b], "not ours: must stay"
        assert dns_reader.ptr(b) == [their_name]
        dns.deregister(my_name, mine, [Address(a, 4)])
        assert dns_reader.forward(my_name) == [] and dns_reader.ptr(a) == []
        dns.deregister(my_name, mine, [Address(a, 4)])  # absent is success
        assert dns_reader.forward(their_name) == [b]
        dns.deregister(their_name, theirs, [Address(b, 4)])

    def test_a_name_another_instance_holds_is_a_conflict_and_nothing_changes(
            self, dns: Any, dns_space: DnsSpace, dns_reader: DnsReader) -> None:
        first, second, fqdn, held = _uuid(), _uuid(), dns_space.name(), dns_space.v4()
        dns.register(fqdn, first, [Address(held, 4)])
        intruder = dns_space.v4()
        with pytest.raises(Conflict, match=re.escape(fqdn)):
            dns.register(fqdn, second, [Address(intruder, 4)])
        assert dns_reader.forward(fqdn) == [held]
        assert dns_reader.ptr(intruder) == []
        dns.deregister(fqdn, first, [Address(held, 4)])

    def test_an_address_whose_ptr_another_instance_holds_is_a_conflict_and_stays(
            self, dns: Any, dns_space: DnsSpace, dns_reader: DnsReader) -> None:
        first, second, shared = _uuid(), _uuid(), dns_space.v4()
        first_name, second_name = dns_space.name(), dns_space.name()
        dns.register(first_name, first, [Address(shared, 4)])
        with pytest.raises(Conflict, match=shared):
            dns.register(second_name, second, [Address(shared, 4)])
        assert dns_reader.ptr(shared) == [first_name]
        assert dns_reader.forward(second_name) == []
        dns.deregister(second_name, second, [Address(shared, 4)])
        assert dns_reader.ptr(shared) == [first_name], "another instance's PTR must stay"
        dns.deregister(first_name, first, [Address(shared, 4)])

    def test_preflight_refuses_what_register_would_and_writes_nothing(
            self, dns: Any, dns_space: DnsSpace, dns_reader: DnsReader) -> None:
        owner, taken, held = _uuid(), dns_space.name(), dns_space.v4()
        dns.register(taken, owner, [Address(held, 4)])
        fresh, address = dns_space.name(), dns_space.v4()
        assert dns.preflight(fresh, _uuid(), [Address(address, 4)]) is None
        refused = [(Conflict, taken, [Address(dns_space.v4(), 4)]),
                   (Conflict, fresh, [Address(held, 4)]),
                   (OutOfScope, fresh, [Address(dns_space.outside_address, 4)]),
                   (OutOfScope, dns_space.outside_name, [Address(address, 4)])]
        for error, fqdn, addresses in refused:
            with pytest.raises(error):
                dns.preflight(fqdn, _uuid(), addresses)
        assert dns_reader.forward(fresh) == [] and dns_reader.ptr(address) == []
        assert dns_reader.forward(taken) == [held]
        dns.deregister(taken, owner, [Address(held, 4)])

    def test_a_name_a_person_made_is_a_conflict_and_stays(
            self, dns: Any, dns_space: DnsSpace, dns_reader: DnsReader) -> None:
        owner, fqdn, theirs = _uuid(), dns_space.name(), dns_space.v4()
        dns_reader.plant(fqdn, theirs)
        with pytest.raises(Conflict):
            dns.register(fqdn, owner, [Address(dns_space.v4(), 4)])
        dns.deregister(fqdn, owner, [Address(theirs, 4)])
        assert dns_reader.forward(fqdn) == [theirs]

    def test_an_address_outside_every_reverse_zone_writes_nothing(
            self, dns: Any, dns_space: DnsSpace, dns_reader: DnsReader) -> None:
        fqdn = dns_space.name()
        with pytest.raises(OutOfScope, match=dns_space.outside_address):
            dns.register(fqdn, _uuid(), [Address(dns_space.v4(), 4),
                                         Address(dns_space.outside_address, 4)])
        assert dns_reader.forward(fqdn) == []

    def test_a_name_outside_the_zone_is_out_of_scope(
            self, dns: Any, dns_space: DnsSpace, dns_reader: DnsReader) -> None:
        address = dns_space.v4()
        with pytest.raises(OutOfScope, match="example.org"):
            dns.register(dns_space.outside_name, _uuid(), [Address(address, 4)])
        assert dns_reader.ptr(address) == []

    def test_check_names_the_zone_it_reached(self, dns: Any, dns_space: DnsSpace) -> None:
        assert dns_space.zone in dns.check()

    def test_wrong_credentials_are_an_auth_failure(
            self, dns_bad_credentials: Any, dns_space: DnsSpace, dns_reader: DnsReader) -> None:
        fqdn = dns_space.name()
        with pytest.raises(AuthFailed):
            dns_bad_credentials.register(fqdn, _uuid(), [Address(dns_space.v4(), 4)])
        assert dns_reader.forward(fqdn) == []

    def test_unreachable_server_is_transient(self, dns_unreachable: Any,
                                             dns_space: DnsSpace) -> None:
        with pytest.raises(BackendUnavailable):
            dns_unreachable.register(dns_space.name(), _uuid(), [Address(dns_space.v4(), 4)])
