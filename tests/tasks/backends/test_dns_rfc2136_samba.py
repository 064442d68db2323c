"""The RFC 2136 driver against Samba AD's own DNS server, with unsigned updates allowed.

Samba's DNS verifies only GSS-TSIG, so the driver reaches it with
``allow_unsigned``; the fixture's DC has ``allow dns updates = nonsecure``.
Every record is checked by querying Samba directly.
"""

import itertools
import logging
import uuid
from typing import Any, List

import dns.message
import dns.query
import dns.rdatatype
import dns.reversename
import pytest

from novahooks.event import Address
from tests.servers.samba import SambaServer
from novahooks.settings import DnsSettings, Secret
from tasks.backends.dns.rfc2136 import Rfc2136Dns
from tasks.errors import AuthFailed, Conflict, Misconfigured, OutOfScope

_serial = itertools.count(120)


def address() -> str:
    return "10.0.2.%d" % next(_serial)


def lookup(samba: SambaServer, name: str, rdtype: str) -> List[str]:
    response = dns.query.tcp(dns.message.make_query(name, rdtype), samba.address, timeout=3)
    return sorted(rd.to_text() for rrset in response.answer
                  if rrset.rdtype == dns.rdatatype.from_text(rdtype) for rd in rrset)


def ptr(samba: SambaServer, ip: str) -> List[str]:
    return lookup(samba, dns.reversename.from_address(ip).to_text(), "PTR")


def dns_settings(samba: SambaServer, **over: Any) -> DnsSettings:
    values = {"server": samba.address, "port": 53, "zone": samba.zone,
              "reverse_zones": [samba.reverse_zone], "allow_unsigned": True, "timeout": 3.0}
    values.update(over)
    return DnsSettings(values)


@pytest.fixture
def driver(samba: SambaServer) -> Rfc2136Dns:
    return Rfc2136Dns(dns_settings(samba))


def fqdn(samba: SambaServer) -> str:
    return "win-%s.%s" % (uuid.uuid4().hex[:8], samba.zone)


def test_unsigned_updates_stay_refused_by_default(samba: SambaServer) -> None:
    with pytest.raises(Misconfigured, match="refusing to send unsigned updates"):
        Rfc2136Dns(dns_settings(samba, allow_unsigned=False))


def test_allowing_unsigned_updates_warns_at_start(samba: SambaServer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="novahooks.dns"):
        driver = Rfc2136Dns(dns_settings(samba))
    assert any(r.levelno == logging.WARNING and "UNSIGNED" in r.getMessage()
               for r in caplog.records)
    assert "UNSIGNED" in driver.check()


def test_a_key_given_means_signed_even_if_unsigned_is_allowed(samba: SambaServer) -> None:
    # A TSIG key Samba does not know: a signed update, which Samba refuses, rather than a
    # silent fall-back to unsigned.
    keyed = Rfc2136Dns(dns_settings(samba, tsig_key_name="novahooks",
                                    tsig_secret=Secret("c2VjcmV0c2VjcmV0c2VjcmV0")))
    name = fqdn(samba)
    with pytest.raises(AuthFailed, match="PeerBadKey"):
        keyed.register(name, str(uuid.uuid4()), [Address(address(), 4)])
    assert lookup(samba, name, "A") == []


def test_forward_and_reverse_records_land_in_samba_and_go(samba: SambaServer,
                                                         driver: Rfc2136Dns) -> None:
    owner, name, v4 = str(uuid.uuid4()), fqdn(samba), address()
    driver.register(name, owner, [Address(v4, 4)])
    assert lookup(samba, name, "A") == [v4]
    assert lookup(samba, name, "TXT") == ['"novahooks:instance=%s"' % owner]
    assert ptr(samba, v4) == [name + "."]
    assert driver.describe(name, owner, [v4]) == {"A": [v4], "AAAA": [], "owned": True,
                                                  "PTR": {v4: [name + "."]}}

    moved = address()
    driver.register(name, owner, [Address(moved, 4)])  # prerequisite: our TXT is present
    assert lookup(samba, name, "A") == [moved]
    assert ptr(samba, moved) == [name + "."] and ptr(samba, v4) == []

    driver.deregister(name, owner, [Address(moved, 4)])
    assert lookup(samba, name, "A") == [] and lookup(samba, name, "TXT") == []
    assert ptr(samba, moved) == []
    driver.deregister(name, owner, [Address(moved, 4)])  # absent is success


def test_a_name_another_instance_owns_is_a_conflict(samba: SambaServer,
                                                   driver: Rfc2136Dns) -> None:
    first, second, name, v4 = str(uuid.uuid4()), str(uuid.uuid4()), fqdn(samba), address()
    driver.register(name, first, [Address(v4, 4)])
    with pytest.raises(Conflict):
        driver.register(name, second, [Address(address(), 4)])
    driver.deregister(name, second, [Address(v4, 4)])  # not its records: nothing removed
    assert lookup(samba, name, "A") == [v4] and ptr(samba, v4) == [name + "."]
    driver.deregister(name, first, [Address(v4, 4)])
    assert lookup(samba, name, "A") == []


def test_names_outside_samba_zones_are_out_of_scope(samba: SambaServer,
                                                    driver: Rfc2136Dns) -> None:
    with pytest.raises(OutOfScope):
        driver.register("web.example.org", str(uuid.uuid4()), [Address(address(), 4)])
    with pytest.raises(OutOfScope):
        driver.register(fqdn(samba), str(uuid.uuid4()), [Address("192.0.2.9", 4)])
