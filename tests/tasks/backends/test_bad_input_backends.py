"""Bad input against the real BIND and slapd: no backend ever holds a partial record.

Generated hostnames (LDAP specials, NUL, newlines, Unicode that case-folds or IDNA-maps
into ASCII, labels around 63 characters) and addresses (IPv4, IPv6 in every spelling,
IPv4-mapped, zone ids, leading zeros, out-of-zone, wrongly typed, wrong version) go through
what a worker does with an event: ``event_from_dict`` + ``tasks.validate.event`` (as
``StepTask.parse``), and only when that accepts them the real ``Rfc2136Dns`` and
``LdapDirectory`` drivers in chain order (dns.register, then ldap.register; the chain stops
at the first permanent error). Then the servers themselves are asked: a refused event left
nothing, an out-of-zone address was refused (``OutOfScope``) before anything was written,
an accepted one left exactly its records, and after deregistering nothing is left.

"Nothing" is checked by zone transfers of every zone and a directory search for the
example's unique token, so a record under a mangled name (IDNA, escaping) is found too.
A sentinel instance holds 10.20.200.250 and 2001:db8:20::ffff for the whole run; no
example may touch its records (an IPv4-mapped ::ffff:10.20.200.250 would overwrite its PTR).
Each example uses a fresh UUID and addresses from 10.20.200.0/24 and 2001:db8:20::ff00/120.
"""

import ipaddress
import os
import ssl
import uuid as uuidlib
from typing import Any, Dict, Iterator, List, Set, Tuple

import dns.message
import dns.name
import dns.query
import dns.rdatatype
import dns.reversename
import dns.tsigkeyring
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import event as note_event
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from ldap3 import SUBTREE, Connection, Server, Tls
from ldap3.utils.conv import escape_filter_chars

from novahooks.event import (Address, EventFormatError, InstanceEvent, event_from_dict,
                                  new_event)
from tests.servers.stack import Stack
from novahooks.settings import Settings
from tasks import validate
from tasks.backends.directory.ldap import LdapDirectory
from tasks.backends.dns.base import owner_marker
from tasks.backends.dns.rfc2136 import Rfc2136Dns
from tasks.errors import InvalidEvent, OutOfScope

#: Generated events per run: 100 in the suite; NOVAHOOKS_HOSTILE_EXAMPLES=1000 for the
#: issue's thousand against the real servers (9 minutes at a load of 25 on 2 cores).
EXAMPLES = int(os.environ.get("NOVAHOOKS_HOSTILE_EXAMPLES", "100"))
V6_BASE = ipaddress.IPv6Address("2001:db8:20::ff00")
SENTINEL_V4, SENTINEL_V6 = "10.20.200.250", "2001:db8:20::ffff"
#: What the configured reverse zones cover (10.in-addr.arpa, 168.192.in-addr.arpa,
#: 8.b.d.0.1.0.0.2.ip6.arpa), stated independently of the driver.
COVERED = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32")]
LDAP_SPECIALS = list(',+"\\<>;=#*()') + ["\x00"]
TRICKY = LDAP_SPECIALS + ["\n", " ", ".", "_", "/", "@", "%", "-", "\u017f", "\u212a",
                          "\u0131", "\u0130", "\u00e9", "\uff10", "\u200b"]


# --- what the servers hold ---------------------------------------------------------------

class Servers(object):
    def __init__(self, stack: Stack, settings: Settings) -> None:
        self.stack = stack
        self.zone = settings.dns.zone
        self.zones = [self.zone] + list(settings.dns.reverse_zones)
        self.keyname = settings.dns.tsig_key_name
        self.keyring = dns.tsigkeyring.from_text(
            {settings.dns.tsig_key_name: settings.dns.tsig_secret.reveal()})
        self.algorithm = dns.name.from_text(settings.dns.tsig_algorithm)
        self._admin = None  # type: Any

    def lookup(self, name: str, rdtype: str) -> List[str]:
        query = dns.message.make_query(name, rdtype)
        response = dns.query.tcp(query, "127.0.0.1", port=self.stack.bind.port, timeout=5)
        return sorted(rd.to_text() for rrset in response.answer
                      if rrset.rdtype == dns.rdatatype.from_text(rdtype) for rd in rrset)

    def addresses_at(self, name: str) -> List[str]:
        return sorted(str(ipaddress.ip_address(a))
                      for a in self.lookup(name, "A") + self.lookup(name, "AAAA"))

    def ptr(self, address: str) -> List[str]:
        return self.lookup(dns.reversename.from_address(address).to_text(), "PTR")

    def dns_lines(self, token: str) -> Set[Tuple[str, str, Tuple[str, ...]]]:
        """Every RRset in every served zone whose owner or data mentions ``token``:
        (owner, type, values), addresses in ``ipaddress`` spelling."""
        found = {}  # type: Dict[Tuple[str, str], Set[str]]
        for zone in self.zones:
            for message in dns.query.xfr("127.0.0.1", zone, port=self.stack.bind.port,
                                         keyring=self.keyring, keyname=self.keyname,
                                         keyalgorithm=self.algorithm, timeout=5,
                                         lifetime=10, relativize=False):
                for rrset in message.answer:
                    if token not in rrset.to_text().lower():
                        continue
                    rdtype = dns.rdatatype.to_text(rrset.rdtype)
                    values = [rd.to_text() for rd in rrset]
                    if rdtype in ("A", "AAAA"):
                        values = [str(ipaddress.ip_address(v)) for v in values]
                    # A transfer sends one record per RRset: merge them by owner and type.
                    found.setdefault((rrset.name.to_text(), rdtype), set()).update(values)
        return {(name, rdtype, tuple(sorted(values)))
                for (name, rdtype), values in found.items()}

    def ldap(self) -> Connection:
        """One admin connection (StartTLS, verified) for all of the module's checks."""
        if self._admin is None or self._admin.closed:
            slapd = self.stack.slapd
            tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(slapd.ca_file))
            conn = Connection(Server(slapd.url, tls=tls), slapd.admin_dn,
                              slapd.admin_password)
            conn.open()
            conn.start_tls()
            assert conn.bind()
            self._admin = conn
        return self._admin

    def close(self) -> None:
        if self._admin is not None:
            self._admin.unbind()

    def ldap_entries(self, flt: str) -> List[Any]:
        conn = self.ldap()
        assert conn.search(self.stack.slapd.hosts_base, flt, SUBTREE,
                           attributes=["cn", "objectClass", "ipHostNumber", "macAddress",
                                       "description"]) or conn.result["result"] == 0, \
            conn.result
        return list(conn.entries)

    def ldap_mentions(self, token: str, instance_uuid: str) -> List[Any]:
        """Entries whose name or owner is this example's (as admin, past every ACL)."""
        return self.ldap_entries("(|(cn=*%s*)(description=%s))" % (
            escape_filter_chars(token), escape_filter_chars(instance_uuid)))

    def assert_nothing(self, token: str, instance_uuid: str) -> None:
        assert self.dns_lines(token) == set(), "DNS holds records of a refused/removed event"
        assert self.ldap_mentions(token, instance_uuid) == [], \
            "LDAP holds an entry of a refused/removed event"


@pytest.fixture(scope="module")
def servers(stack: Stack, settings: Settings) -> Iterator[Servers]:
    held = Servers(stack, settings)
    yield held
    held.close()


@pytest.fixture(scope="module")
def dns_driver(settings: Settings) -> Rfc2136Dns:
    return Rfc2136Dns(settings.dns)


@pytest.fixture(scope="module")
def ldap_driver(settings: Settings) -> LdapDirectory:
    return LdapDirectory(settings.directory)


@pytest.fixture(scope="module")
def sentinel(servers: Servers, dns_driver: Rfc2136Dns,
             ldap_driver: LdapDirectory) -> Iterator[InstanceEvent]:
    """Another instance's records next to every example's, which must stay as they are."""
    ident = str(uuidlib.uuid4())
    ev = new_event("build", ident, "hyp-sentinel-" + ident[:8],
                   addresses=[Address(SENTINEL_V4, 4, "fa:16:3e:00:00:fa"),
                              Address(SENTINEL_V6, 6, "fa:16:3e:00:00:fa")], source="test")
    name = validate.fqdn(ev.hostname, servers.zone)
    dns_driver.register(name, ident, ev.addresses)
    ldap_driver.register(ev)
    yield ev
    ldap_driver.deregister(ev)
    dns_driver.deregister(name, ident, ev.addresses)
    servers.assert_nothing(ident[:8], ident)


def assert_sentinel_intact(servers: Servers, ev: InstanceEvent) -> None:
    name = "%s.%s" % (ev.hostname, servers.zone)
    assert servers.addresses_at(name) == sorted([SENTINEL_V4, SENTINEL_V6])
    assert servers.lookup(name, "TXT") == ['"%s"' % owner_marker(ev.uuid)]
    assert servers.ptr(SENTINEL_V4) == [name + "."], "another instance's PTR was overwritten"
    assert servers.ptr(SENTINEL_V6) == [name + "."], "another instance's PTR was overwritten"
    (entry,) = servers.ldap_entries("(description=%s)" % ev.uuid)
    assert sorted(entry.ipHostNumber.values) == sorted([SENTINEL_V4, SENTINEL_V6])


# --- strategies ---------------------------------------------------------------------------

in_v4 = st.integers(1, 249).map(lambda n: "10.20.200.%d" % n)
in_v6 = st.integers(0, 254).map(lambda n: str(V6_BASE + n))
clean_addresses = st.one_of(in_v4, in_v6, in_v6.map(lambda a: ipaddress.IPv6Address(a)
                                                    .exploded.upper()))
out_of_scope = st.sampled_from(["172.16.5.5", "192.0.2.10", "100.64.0.1", "127.0.0.1",
                                "0.0.0.0", "224.0.0.1", "11.20.200.1", "2001:db9::1", "fd00::1",
                                "fe80::1", "::1", "::", "ff02::1", "2002:a14:c801::1",
                                "2001:0db9:0000::0001"])
messy_addresses = st.one_of(
    clean_addresses,
    out_of_scope,
    st.just("192.168.254.254"),                       # in the 168.192.in-addr.arpa zone
    in_v4.map(lambda a: "::ffff:" + a),
    st.sampled_from(["::ffff:" + SENTINEL_V4, "::ffff:a14:c8fa", "::FFFF:10.20.200.250"]),
    in_v6.map(lambda a: a + "%eth0"),
    in_v4.map(lambda a: ".".join("%03d" % int(o) for o in a.split("."))),
    st.sampled_from(["10.20.200.256", "10.20.200", "2001:db8:20::ff00::1", "", " 10.20.200.7",
                     "10.20.200.7\n", "10.20.200.0/24", "fe80::1%eth0"]),
    st.sampled_from([int(ipaddress.IPv4Address("10.20.200.9")), True, None,
                     ["10.20.200.9"]]),
)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join("%02x" % x for x in b))


@st.composite
def address_lists(draw: Any) -> List[Dict[str, Any]]:
    mode = draw(st.sampled_from(["clean", "messy", "clean", "out of scope"]))
    messy = mode == "messy"
    count = draw(st.integers(0 if messy else 1, 3))
    outside = draw(st.integers(0, count)) if mode == "out of scope" else -1
    items = []
    for i in range(count + (outside >= 0)):
        address = draw(out_of_scope if i == outside else
                       messy_addresses if messy else clean_addresses)
        try:
            version = ipaddress.ip_address(address).version
        except (ValueError, TypeError):
            version = 4
        if messy and draw(st.integers(0, 5)) == 3:
            version = draw(st.sampled_from([4 if version == 6 else 6, "4", 4.0, None]))
        mac = draw(st.one_of(st.none(), macs, macs.map(str.upper)) if not messy else
                   st.one_of(st.none(), macs, macs.map(str.upper),
                             st.sampled_from(["fa:16:3e:00:00:0", "fa:16:3e:00:00:00\n", 5])))
        items.append({"address": address, "version": version, "mac": mac, "network": "net-1",
                      "port_id": str(uuidlib.UUID(int=draw(st.integers(0, 2 ** 128 - 1))))})
    return items


label_chars = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
fragments = st.one_of(
    st.just(""),
    st.text(alphabet=label_chars, max_size=8),
    st.sampled_from(TRICKY),
    st.text(alphabet=st.sampled_from(TRICKY + list("ab1-")), min_size=1, max_size=4),
    st.integers(40, 60).map(lambda n: "-" + "x" * n),      # around the 63-character limit
)


clean_prefixes = st.from_regex(r"([a-zA-Z0-9][a-zA-Z0-9-]{0,6})?", fullmatch=True)
clean_suffixes = st.from_regex(r"([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)


@st.composite
def hostnames(draw: Any) -> Tuple[str, str, bool]:
    """(prefix, suffix, upper): the hostname is prefix + "h<token>" + suffix, the token
    unique to the example so that leftovers can be found."""
    if draw(st.booleans()):
        return draw(clean_prefixes), draw(clean_suffixes), draw(st.integers(0, 4)) == 3
    return draw(fragments), draw(fragments), draw(st.integers(0, 4)) == 3


def item(address: Any, version: Any, mac: Any = None) -> Dict[str, Any]:
    return {"address": address, "version": version, "mac": mac, "network": "net-1",
            "port_id": None}


# --- the property -------------------------------------------------------------------------

def parse(payload: Dict[str, Any]) -> InstanceEvent:
    """What StepTask.parse does: read the event, then validate every field."""
    try:
        event = event_from_dict(payload)
    except EventFormatError as exc:
        raise InvalidEvent(exc.field, str(exc)) from None
    return validate.event(event)


def in_scope(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in COVERED)


@hsettings(max_examples=EXAMPLES, deadline=None, database=None,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(host=hostnames(), addresses=address_lists())
# Each of these was accepted before validate.py was fixed, and left a wrong record.
@example(host=("\u017f", "", False), addresses=[])        # DNS "sh…" (IDNA), LDAP "ſh…"
@example(host=("\u0131", "", False), addresses=[item("10.20.200.31", 4)])
@example(host=("", "\n", False), addresses=[])             # a newline in DNS and LDAP
@example(host=("", "", False), addresses=[item("::ffff:10.20.200.250", 6)])  # sentinel's PTR
@example(host=("", "", False), addresses=[item("2001:db8:20::ff01%eth0", 6)])
@example(host=("", "", False), addresses=[item("10.20.200.32", 4, "fa:16:3e:00:00:20\n")])
# Accepted and correct: every spelling reaches the servers canonically.
@example(host=("Web-", "-01", True), addresses=[
    item("2001:0DB8:0020:0000:0000:0000:0000:FF33", 6, "FA:16:3E:00:00:33"),
    item("10.20.200.33", 4, "fa:16:3e:00:00:33"), item("192.168.254.254", 4)])
@example(host=("", "", False), addresses=[item("10.20.200.34", 4), item("172.16.5.5", 4)])
def test_generated_events_leave_exactly_their_records_or_nothing(
        host: Tuple[str, str, bool], addresses: List[Dict[str, Any]], servers: Servers,
        dns_driver: Rfc2136Dns, ldap_driver: LdapDirectory, sentinel: InstanceEvent) -> None:
    ident = str(uuidlib.uuid4())
    token = ident[:8]
    prefix, suffix, upper = host
    hostname = prefix + "h" + token + suffix
    hostname = hostname.upper() if upper else hostname
    payload = new_event("build", ident, hostname, source="test", vm_state="active").to_dict()
    payload["addresses"] = addresses

    try:
        ev = parse(payload)
    except InvalidEvent as exc:
        note_event("refused by validation (%s)" % exc.field.split("[")[0])
        servers.assert_nothing(token, ident)
        assert_sentinel_intact(servers, sentinel)
        return

    assert ev.hostname == hostname.lower() and ev.hostname.isascii()
    assert ev.addresses is not None
    fqdn = validate.fqdn(ev.hostname, servers.zone)
    canonical = sorted({a.address for a in ev.addresses})
    if not all(in_scope(a) for a in canonical):
        with pytest.raises(OutOfScope):
            dns_driver.register(fqdn, ident, ev.addresses)
        note_event("refused by DNS: out of scope")
        servers.assert_nothing(token, ident)          # refused before anything was written
        assert_sentinel_intact(servers, sentinel)
        return

    note_event("accepted with %d address(es)" % len(canonical))
    try:
        for _ in range(2):                            # a redelivered task changes nothing
            dns_driver.register(fqdn, ident, ev.addresses)
            ldap_driver.register(ev)
        assert servers.addresses_at(fqdn) == canonical
        assert servers.lookup(fqdn, "TXT") == ['"%s"' % owner_marker(ident)]
        for address in canonical:
            assert servers.ptr(address) == [fqdn + "."], address
        (entry,) = servers.ldap_mentions(token, ident)
        assert entry.entry_dn.lower() == ldap_driver.dn_for(ev.hostname).lower()
        assert entry.cn.value == ev.hostname
        assert entry.description.value == ident
        held = entry.ipHostNumber.values if "ipHostNumber" in entry else []
        assert sorted(held) == canonical
        macs_held = entry.macAddress.values if "macAddress" in entry else []
        assert sorted(macs_held) == sorted({a.mac for a in ev.addresses if a.mac})
        assert ("ipHost" in entry.objectClass.values) == bool(canonical)
        assert ("ieee802Device" in entry.objectClass.values) == bool(macs_held)
        # Exactly these and nothing else in any zone mentions the example.
        name = fqdn + "."
        expected = {(name, "TXT", ('"%s"' % owner_marker(ident),))}
        for rdtype, version in (("A", 4), ("AAAA", 6)):
            values = tuple(a for a in canonical if ipaddress.ip_address(a).version == version)
            if values:
                expected.add((name, rdtype, values))
        for address in canonical:
            expected.add((dns.reversename.from_address(address).to_text(), "PTR", (name,)))
            expected.add((dns.reversename.from_address(address).to_text(), "TXT",
                          ('"%s"' % owner_marker(ident),)))
        assert servers.dns_lines(token) == expected
        assert_sentinel_intact(servers, sentinel)
    finally:
        ldap_driver.deregister(ev)                    # the delete chain's order
        dns_driver.deregister(fqdn, ident, ev.addresses)
    servers.assert_nothing(token, ident)
    assert_sentinel_intact(servers, sentinel)


def test_out_of_zone_address_writes_nothing_anywhere(servers: Servers, dns_driver: Rfc2136Dns,
                                                      sentinel: InstanceEvent) -> None:
    """One in-zone and one out-of-zone address: refused before the in-zone one is written."""
    ident = str(uuidlib.uuid4())
    payload = new_event("build", ident, "h" + ident[:8], source="test").to_dict()
    payload["addresses"] = [{"address": "10.20.200.77", "version": 4},
                            {"address": "2001:db9::77", "version": 6}]
    ev = parse(payload)
    with pytest.raises(OutOfScope, match="2001:db9::77"):
        dns_driver.register(validate.fqdn(ev.hostname, servers.zone), ident, ev.addresses)
    servers.assert_nothing(ident[:8], ident)
    assert servers.ptr("10.20.200.77") == []


@pytest.mark.parametrize("address", ["::ffff:10.20.200.250", "::ffff:a14:c8fa"])
def test_ipv4_mapped_address_cannot_take_another_instances_ptr(
        address: str, servers: Servers, sentinel: InstanceEvent) -> None:
    ident = str(uuidlib.uuid4())
    payload = new_event("build", ident, "h" + ident[:8], source="test").to_dict()
    payload["addresses"] = [{"address": address, "version": 6}]
    with pytest.raises(InvalidEvent) as caught:
        parse(payload)
    assert caught.value.field == "addresses[0].address"
    assert_sentinel_intact(servers, sentinel)

