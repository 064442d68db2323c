"""Every record owned, every name checked: the RFC 2136 driver against the session's BIND.

Each case is a name or address a tenant can choose that used to get records written (issue
19): an address whose PTR belongs to a router (taken over, then deleted for good), a name
that holds only an MX, CNAME or SRV, a delegated subdomain (NS: written below the cut,
never seen again by the delete), names clients trust by convention (wpad, localhost,
isatap) and the zone's own NS and MX targets. Each is refused before anything is written,
and what was there before is still there, as the server answers afterwards.
"""

import uuid as uuidlib
from typing import Iterator, List

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.tsigkeyring
import dns.update
import pytest

from novahooks.event import Address
from novahooks.settings import Settings
from tasks.backends.dns.base import owner_marker
from tasks.backends.dns.rfc2136 import Rfc2136Dns
from tasks.errors import Conflict, InvalidEvent
from tests.servers.stack import Stack

ZONE = "cloud.example.test"


class Zone(object):
    """Writes and reads the server directly, as an operator (or another tool) would."""

    def __init__(self, stack: Stack, settings: Settings) -> None:
        self.port = stack.bind.port
        self.keyname = settings.dns.tsig_key_name
        self.keyring = dns.tsigkeyring.from_text(
            {settings.dns.tsig_key_name: settings.dns.tsig_secret.reveal()})

    def update(self, zone: str, *changes: tuple) -> None:
        message = dns.update.UpdateMessage(zone, keyring=self.keyring, keyname=self.keyname)
        for op, name, *rest in changes:
            getattr(message, op)(dns.name.from_text(name), *rest)
        response = dns.query.tcp(message, "127.0.0.1", port=self.port, timeout=5)
        assert response.rcode() == 0, dns.rcode.to_text(response.rcode())

    def lookup(self, name: str, rdtype: str) -> List[str]:
        """The values of ``name``'s RRset; NS also from a referral (a delegation's NS)."""
        query = dns.message.make_query(name, rdtype)
        query.use_tsig(self.keyring, keyname=self.keyname)
        response = dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=5)
        sections = response.answer + (response.authority if rdtype == "NS" else [])
        return sorted(rd.to_text() for rrset in sections
                      if rrset.rdtype == dns.rdatatype.from_text(rdtype)
                      and rrset.name == dns.name.from_text(name) for rd in rrset)

    def ptr(self, address: str) -> List[str]:
        return self.lookup(dns.reversename.from_address(address).to_text(), "PTR")

    def nothing_at(self, name: str) -> bool:
        return all(not self.lookup(name, t) for t in ("A", "AAAA", "TXT"))


@pytest.fixture(scope="module")
def zone(stack: Stack, settings: Settings) -> Zone:
    return Zone(stack, settings)


@pytest.fixture
def driver(settings: Settings) -> Rfc2136Dns:
    return Rfc2136Dns(settings.dns)  # fresh: the zone's NS/MX targets are read anew


def _name(prefix: str) -> str:
    return "%s-%s" % (prefix, uuidlib.uuid4().hex[:8])


@pytest.fixture
def router(zone: Zone) -> Iterator[str]:
    """10.20.201.x's PTR, made by hand for a router (no novahooks marker)."""
    address = "10.20.201.%d" % (uuidlib.uuid4().int % 200 + 20)
    ptr = dns.reversename.from_address(address).to_text()
    zone.update("10.in-addr.arpa", ("replace", ptr, 300, "PTR", "core-router.example.net."))
    yield address
    zone.update("10.in-addr.arpa", ("delete", ptr))


def test_an_address_whose_ptr_belongs_to_a_router_is_refused_and_its_ptr_kept(
        zone: Zone, driver: Rfc2136Dns, router: str) -> None:
    host, ident = _name("vm"), str(uuidlib.uuid4())
    fqdn = "%s.%s" % (host, ZONE)
    addresses = [Address(router, 4)]
    for call in (driver.preflight, driver.register):
        with pytest.raises(Conflict, match="reverse name of %s" % router):
            call(fqdn, ident, addresses)
    assert zone.nothing_at(fqdn), "the forward name was written before the refusal"
    assert zone.ptr(router) == ["core-router.example.net."]
    driver.deregister(fqdn, ident, addresses)  # a delete that stored the address anyway
    assert zone.ptr(router) == ["core-router.example.net."]


def test_another_instances_ptr_survives_a_delete_naming_its_address(
        zone: Zone, driver: Rfc2136Dns) -> None:
    owner, intruder = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    name = "%s.%s" % (_name("own"), ZONE)
    address = "10.20.201.%d" % (uuidlib.uuid4().int % 20 + 2)
    driver.register(name, owner, [Address(address, 4)])
    try:
        reverse = dns.reversename.from_address(address).to_text()
        assert zone.lookup(reverse, "TXT") == ['"%s"' % owner_marker(owner)]
        other = "%s.%s" % (_name("intr"), ZONE)
        result = driver.deregister(other, intruder, [Address(address, 4)])
        assert result["ptr_removed"] == []
        assert zone.ptr(address) == [name + "."]
    finally:
        assert driver.deregister(name, owner, [Address(address, 4)])["ptr_removed"] == [address]
    assert zone.ptr(address) == [] and zone.nothing_at(name)
    assert zone.lookup(dns.reversename.from_address(address).to_text(), "TXT") == []


def test_a_ptr_to_our_own_name_from_before_markers_is_adopted(
        zone: Zone, driver: Rfc2136Dns) -> None:
    ident, name = str(uuidlib.uuid4()), "%s.%s" % (_name("old"), ZONE)
    address = "10.20.201.%d" % (uuidlib.uuid4().int % 20 + 230)
    reverse = dns.reversename.from_address(address).to_text()
    zone.update("10.in-addr.arpa", ("replace", reverse, 300, "PTR", name + "."))
    driver.register(name, ident, [Address(address, 4)])
    assert zone.ptr(address) == [name + "."]
    assert zone.lookup(reverse, "TXT") == ['"%s"' % owner_marker(ident)]
    driver.deregister(name, ident, [Address(address, 4)])
    assert zone.ptr(address) == [] and zone.lookup(reverse, "TXT") == []


@pytest.mark.parametrize("rdtype,value", [("MX", "10 mail.example.net."),
                                          ("CNAME", "www.example.net."),
                                          ("SRV", "0 0 5060 sip.example.net."),
                                          ("NS", "ns.example.net.")])
def test_a_name_holding_any_other_rrset_or_a_delegation_is_a_conflict(
        zone: Zone, driver: Rfc2136Dns, rdtype: str, value: str) -> None:
    host = _name(rdtype.lower())
    held = "%s.%s." % (host, ZONE)
    zone.update(ZONE, ("replace", held, 300, rdtype, value))
    try:
        ident = str(uuidlib.uuid4())
        names = [held.rstrip(".")]
        if rdtype == "NS":
            names.append("vm.%s" % held.rstrip("."))  # below the cut, too
        for fqdn in names:
            address = "10.20.202.%d" % (uuidlib.uuid4().int % 200 + 20)
            for call in (driver.preflight, driver.register):
                with pytest.raises(Conflict):
                    call(fqdn, ident, [Address(address, 4)])
            assert zone.ptr(address) == []
        assert zone.lookup(held, rdtype) == [value]
        if rdtype != "NS":
            assert zone.lookup(held, "TXT") == [] and zone.lookup(held, "A") == []
    finally:
        zone.update(ZONE, ("delete", held))


@pytest.mark.parametrize("label", ["wpad", "localhost", "isatap", "WPAD"])
def test_names_clients_trust_by_convention_are_refused(
        zone: Zone, driver: Rfc2136Dns, label: str) -> None:
    fqdn = "%s.%s" % (label, ZONE)
    with pytest.raises(InvalidEvent, match="reserved"):
        driver.preflight(fqdn, str(uuidlib.uuid4()), [])
    with pytest.raises(InvalidEvent, match="reserved"):
        driver.register(fqdn, str(uuidlib.uuid4()), [Address("10.20.202.3", 4)])
    assert zone.nothing_at(fqdn.lower()) and zone.ptr("10.20.202.3") == []


def test_the_zones_ns_and_mx_targets_are_refused(zone: Zone, settings: Settings) -> None:
    mx = _name("mx")
    target = "%s.%s." % (mx, ZONE)
    # BIND refuses an MX whose target has no address (check-integrity)
    zone.update(ZONE, ("replace", target, 300, "A", "192.0.2.25"),
                ("add", ZONE + ".", 300, "MX", "10 " + target))
    try:
        driver = Rfc2136Dns(settings.dns)
        for host, which in (("ns1", "NS target"), (mx, "MX target")):
            fqdn = "%s.%s" % (host, ZONE)
            with pytest.raises(Conflict, match=which):
                driver.preflight(fqdn, str(uuidlib.uuid4()), [])
        assert zone.lookup("ns1.%s" % ZONE, "A") == ["127.0.0.1"]
        assert zone.lookup(target, "A") == ["192.0.2.25"] and zone.lookup(target, "TXT") == []
    finally:
        zone.update(ZONE, ("delete", ZONE + ".", "MX"), ("delete", target))


def test_zone_transfers_need_the_key(zone: Zone) -> None:
    """The whole zone lists every VM: only the TSIG key may transfer it."""
    import dns.exception
    import dns.xfr
    with pytest.raises((dns.xfr.TransferError, dns.exception.FormError, EOFError)):
        list(dns.query.xfr("127.0.0.1", ZONE, port=zone.port, timeout=5, lifetime=10))
    signed = list(dns.query.xfr("127.0.0.1", ZONE, port=zone.port, keyring=zone.keyring,
                                keyname=zone.keyname, timeout=5, lifetime=10))
    assert signed and signed[0].answer
