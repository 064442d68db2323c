"""The RFC 2136 driver against a real BIND, checked by querying BIND directly."""

from typing import List

import dns.message
import dns.query
import dns.rdatatype
import dns.reversename
import pytest

from novahooks.event import Address
from tests.servers.stack import Stack
from novahooks.settings import Settings, load_settings
from tasks.backends.dns.rfc2136 import Rfc2136Dns
from tasks.errors import AuthFailed, BackendUnavailable, Conflict, Misconfigured, OutOfScope
from tests.conftest import mac, unique_v4, unique_v6


def lookup(stack: Stack, name: str, rdtype: str) -> List[str]:
    query = dns.message.make_query(name, rdtype)
    response = dns.query.tcp(query, "127.0.0.1", port=stack.bind.port, timeout=3)
    return sorted(rd.to_text() for rrset in response.answer
                  if rrset.rdtype == dns.rdatatype.from_text(rdtype) for rd in rrset)


def ptr(stack: Stack, address: str) -> List[str]:
    return lookup(stack, dns.reversename.from_address(address).to_text(), "PTR")


@pytest.fixture
def driver(settings: Settings) -> Rfc2136Dns:
    return Rfc2136Dns(settings.dns)


def test_register_writes_a_aaaa_and_both_ptrs(stack: Stack, driver: Rfc2136Dns) -> None:
    v4, v6 = unique_v4(), unique_v6()
    fqdn = "dns-a.cloud.example.test"
    driver.register(fqdn, "11111111-1111-1111-1111-111111111111",
                    [Address(v4, 4, mac()), Address(v6, 6, mac())])
    assert lookup(stack, fqdn, "A") == [v4]
    assert lookup(stack, fqdn, "AAAA") == [v6]
    assert ptr(stack, v4) == [fqdn + "."]
    assert ptr(stack, v6) == [fqdn + "."]
    assert ".ip6.arpa" in dns.reversename.from_address(v6).to_text()


def test_ptr_in_the_192_168_reverse_zone(stack: Stack, driver: Rfc2136Dns) -> None:
    driver.register("dns-i.cloud.example.test", "12121212-1212-1212-1212-121212121212",
                    [Address("192.168.1.77", 4)])
    assert ptr(stack, "192.168.1.77") == ["dns-i.cloud.example.test."]
    driver.deregister("dns-i.cloud.example.test", "12121212-1212-1212-1212-121212121212", [])
    assert ptr(stack, "192.168.1.77") == []


def test_register_twice_leaves_one_record_and_moves_ptr(stack: Stack, driver: Rfc2136Dns) -> None:
    owner = "22222222-2222-2222-2222-222222222222"
    fqdn = "dns-b.cloud.example.test"
    first, second = unique_v4(), unique_v4()
    driver.register(fqdn, owner, [Address(first, 4)])
    driver.register(fqdn, owner, [Address(first, 4)])
    assert lookup(stack, fqdn, "A") == [first]
    driver.register(fqdn, owner, [Address(second, 4)])
    assert lookup(stack, fqdn, "A") == [second]
    assert ptr(stack, first) == []
    assert ptr(stack, second) == [fqdn + "."]


def test_deregister_removes_only_what_the_instance_owns(stack: Stack,
                                                        driver: Rfc2136Dns) -> None:
    mine, theirs = "33333333-3333-3333-3333-333333333333", "44444444-4444-4444-4444-444444444444"
    a, b = unique_v4(), unique_v4()
    driver.register("dns-c.cloud.example.test", mine, [Address(a, 4)])
    driver.register("dns-d.cloud.example.test", theirs, [Address(b, 4)])
    driver.deregister("dns-c.cloud.example.test", mine, [Address(a, 4)])
    assert lookup(stack, "dns-c.cloud.example.test", "A") == []
    assert lookup(stack, "dns-c.cloud.example.test", "TXT") == []
    assert ptr(stack, a) == []
    assert lookup(stack, "dns-d.cloud.example.test", "A") == [b]
    assert ptr(stack, b) == ["dns-d.cloud.example.test."]
    driver.deregister("dns-d.cloud.example.test", mine, [Address(b, 4)])
    assert lookup(stack, "dns-d.cloud.example.test", "A") == [b], "not ours: must stay"
    assert ptr(stack, b) == ["dns-d.cloud.example.test."]
    driver.deregister("dns-c.cloud.example.test", mine, [])


def test_taken_name_is_a_conflict_and_nothing_changes(stack: Stack, driver: Rfc2136Dns) -> None:
    a = unique_v4()
    driver.register("dns-e.cloud.example.test", "55555555-5555-5555-5555-555555555555",
                    [Address(a, 4)])
    with pytest.raises(Conflict, match="dns-e.cloud.example.test"):
        driver.register("dns-e.cloud.example.test", "66666666-6666-6666-6666-666666666666",
                        [Address(unique_v4(), 4)])
    assert lookup(stack, "dns-e.cloud.example.test", "A") == [a]


def test_address_outside_reverse_zones_writes_nothing(stack: Stack, driver: Rfc2136Dns) -> None:
    with pytest.raises(OutOfScope, match="172.16.5.5"):
        driver.register("dns-f.cloud.example.test", "77777777-7777-7777-7777-777777777777",
                        [Address(unique_v4(), 4), Address("172.16.5.5", 4)])
    assert lookup(stack, "dns-f.cloud.example.test", "A") == []


def test_wrong_tsig_secret_is_an_auth_failure(stack: Stack, tmp_path) -> None:
    secret = tmp_path / "bad"
    secret.write_text("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=")
    settings = load_settings(str(stack.config_path),
                             {"NOVAHOOKS_DNS_TSIG_SECRET_FILE": str(secret)})
    with pytest.raises(AuthFailed, match="TSIG"):
        Rfc2136Dns(settings.dns).register("dns-g.cloud.example.test",
                                          "88888888-8888-8888-8888-888888888888",
                                          [Address(unique_v4(), 4)])


def test_unsigned_configuration_is_refused(stack: Stack) -> None:
    settings = load_settings(str(stack.config_path), {"NOVAHOOKS_DNS_TSIG_SECRET": ""})
    with pytest.raises(Misconfigured, match="unsigned"):
        Rfc2136Dns(settings.dns)


def test_unreachable_server_is_transient(stack: Stack) -> None:
    from tests.servers.base import free_port
    settings = load_settings(str(stack.config_path),
                             {"NOVAHOOKS_DNS_PORT": str(free_port()), "NOVAHOOKS_DNS_TIMEOUT": "1"})
    with pytest.raises(BackendUnavailable):
        Rfc2136Dns(settings.dns).register("dns-h.cloud.example.test",
                                          "99999999-9999-9999-9999-999999999999",
                                          [Address(unique_v4(), 4)])
