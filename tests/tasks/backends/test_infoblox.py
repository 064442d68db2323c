"""Infoblox IPAM and DNS drivers against the local WAPI stand-in, checked over WAPI directly.

No NIOS appliance runs here: tests/servers/wapi/ answers the documented
WAPI calls as a real process on loopback. The grid is seeded the way an admin
would seed it (networks, zones) through WAPI, and every assertion reads what the
grid holds with plain requests, never through the driver under test. The IPAM
driver runs the same contract class as the NetBox driver.
"""

import ipaddress
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import requests

from novahooks.event import Address
from tests.servers.base import free_port
from tests.servers.wapi import WapiServer, start_wapi
from novahooks.settings import Settings, load_settings
from tasks.backends.dns.infoblox import InfobloxDns
from tasks.backends.infoblox.client import UUID_ATTR
from tasks.backends.ipam.infoblox import InfobloxIpam
from tasks.errors import Misconfigured, OutOfScope, StepError
from tests.conftest import make_event, unique_v4, unique_v6
from tests.tasks.backends.dns_contract import DnsContract, DnsReader, DnsSpace
from tests.tasks.backends.driver_fixtures import driver_fixtures
from tests.tasks.backends.ipam_contract import IpamContract, IpamReader

ZONE = "cloud.example.test"
REVERSE_ZONES = "10.in-addr.arpa, 8.b.d.0.1.0.0.2.ip6.arpa"


class Grid(object):
    """Plain WAPI requests as the grid's admin: seeding and reading back."""

    def __init__(self, server: WapiServer) -> None:
        self.url = server.url
        self.session = requests.Session()
        self.session.auth = (server.username, server.password)

    def post(self, objtype: str, body: Dict[str, Any]) -> str:
        response = self.session.post("%s/%s" % (self.url, objtype), json=body, timeout=5)
        assert response.status_code == 201, response.text
        return str(response.json())

    def get(self, objtype: str, **params: str) -> List[Dict[str, Any]]:
        response = self.session.get("%s/%s" % (self.url, objtype), params=params, timeout=5)
        assert response.status_code == 200, response.text
        return list(response.json())

    def tagged(self, objtype: str, instance_uuid: str, fields: str) -> List[Dict[str, Any]]:
        return self.get(objtype, _return_fields=fields, **{"*" + UUID_ATTR: instance_uuid})


@pytest.fixture(scope="module")
def wapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WapiServer]:
    server = start_wapi(tmp_path_factory.mktemp("wapi"))
    try:
        grid = Grid(server)
        grid.post("network", {"network": "10.20.0.0/16", "network_view": "default"})
        grid.post("network", {"network": "192.168.1.0/24"})
        grid.post("ipv6network", {"network": "2001:db8:20::/64"})
        for fqdn in (ZONE, "10.0.0.0/8", "2001:db8::/32"):
            grid.post("zone_auth", {"fqdn": fqdn, "view": "default"})
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def grid(wapi: WapiServer) -> Grid:
    return Grid(wapi)


def configure(wapi: WapiServer, workdir: Path, password: str = "", **extra: str) -> Settings:
    """An operator's configuration: the INI names a password file (mode 0600)."""
    secret = workdir / "infoblox.password"
    secret.write_text(password or wapi.password)
    secret.chmod(0o600)
    common = "url = %s\nusername = %s\npassword_file = %s\n" % (
        extra.pop("url", wapi.url), wapi.username, secret)
    path = workdir / "novahooks.conf"
    path.write_text("[ipam]\ndriver = infoblox\n%s\n[dns]\ndriver = infoblox\n%szone = %s\n"
                    "reverse_zones = %s\nttl = 600\ntimeout = 3\n"
                    % (common, common, ZONE, extra.pop("reverse_zones", REVERSE_ZONES)))
    return load_settings(str(path), {})


@pytest.fixture(scope="module")
def settings(wapi: WapiServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return configure(wapi, tmp_path_factory.mktemp("conf"))


def grid_fixtures(kind: str, driver: type, reader: type) -> type:
    """The contract's fixtures for one Infoblox driver: configured as an operator would,
    with a password the grid refuses, or pointed at a closed port."""
    def build(request: Any, **changed: str) -> Any:
        settings = configure(request.getfixturevalue("wapi"), request.getfixturevalue(
            "tmp_path"), **changed) if changed else request.getfixturevalue("settings")
        return driver(getattr(settings, kind))

    return driver_fixtures(
        kind, build, lambda request: {"password": "not-the-password"},
        lambda request: {"url": "http://127.0.0.1:%d/wapi/v2.12" % free_port()},
        reader=lambda request: reader(request.getfixturevalue("grid")))


class InfobloxReader(IpamReader):
    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def held(self, instance_uuid: str) -> List[str]:
        hosts = self.grid.tagged("record:host", instance_uuid, "ipv4addrs,ipv6addrs")
        return sorted([e["ipv4addr"] for h in hosts for e in h["ipv4addrs"]] +
                      [e["ipv6addr"] for h in hosts for e in h["ipv6addrs"]])

    def name_of(self, address: str) -> str:
        (host,) = self.grid.get("record:host", ipv4addr=address)
        return str(host["name"])


class TestInfobloxIpam(grid_fixtures("ipam", InfobloxIpam, InfobloxReader), IpamContract):
    def test_one_host_record_out_of_dns_tagged_with_the_uuid(
            self, grid: Grid, ipam: InfobloxIpam) -> None:
        v4, v6 = unique_v4(), unique_v6()
        ev = make_event(addresses=[Address(v4, 4), Address(v6, 6)])
        ipam.ensure(ev.uuid, "ib-a.cloud.example.test", ev.addresses)
        ipam.ensure(ev.uuid, "ib-a.cloud.example.test", ev.addresses)
        (host,) = grid.tagged("record:host", ev.uuid,
                              "name,configure_for_dns,extattrs,ipv4addrs,ipv6addrs")
        assert host["name"] == "ib-a.cloud.example.test"
        assert host["configure_for_dns"] is False
        assert host["extattrs"] == {UUID_ATTR: {"value": ev.uuid}}
        assert [e["ipv4addr"] for e in host["ipv4addrs"]] == [v4]
        assert [e["ipv6addr"] for e in host["ipv6addrs"]] == [v6]
        assert grid.get("record:a", name="ib-a.cloud.example.test") == []
        ipam.release(ev.uuid)
        assert grid.tagged("record:host", ev.uuid, "name") == []

    def test_allocate_takes_the_next_free_address_of_a_network(
            self, grid: Grid, ipam: InfobloxIpam) -> None:
        ev = make_event()
        first = ipam.allocate(ev.uuid, "ib-b.cloud.example.test", "192.168.1.0/24")
        second = ipam.allocate(ev.uuid, "ib-b.cloud.example.test", "192.168.1.0/24")
        assert first != second and {first, second} <= {"192.168.1.%d" % i for i in range(1, 255)}
        assert InfobloxReader(grid).held(ev.uuid) == sorted([first, second])
        with pytest.raises(OutOfScope, match="172.30.0.0/24"):
            ipam.allocate(ev.uuid, "ib-b.cloud.example.test", "172.30.0.0/24")
        assert ipam.release(ev.uuid)["released"] == sorted([first, second])

    def test_extensible_attribute_is_defined_in_the_grid(self, grid: Grid,
                                                         ipam: InfobloxIpam) -> None:
        ipam.check()
        (definition,) = grid.get("extensibleattributedef", name=UUID_ATTR)
        assert definition["type"] == "STRING"


def test_url_without_wapi_version_is_misconfigured(wapi: WapiServer, tmp_path: Path) -> None:
    settings = configure(wapi, tmp_path, url="http://127.0.0.1:%d/" % wapi.port)
    with pytest.raises(Misconfigured, match="/wapi/v"):
        InfobloxIpam(settings.ipam)


def test_missing_password_is_misconfigured(wapi: WapiServer, tmp_path: Path) -> None:
    settings = configure(wapi, tmp_path)
    with pytest.raises(Misconfigured, match="password"):
        InfobloxDns(load_settings(str(settings.source),
                                  {"NOVAHOOKS_DNS_PASSWORD": ""}).dns)


@pytest.fixture
def driver(settings: Settings) -> InfobloxDns:
    return InfobloxDns(settings.dns)


def dns_held(grid: Grid, instance_uuid: str) -> Dict[str, List[str]]:
    """What the grid holds under this instance's tag: A, AAAA, PTR as name=address."""
    return {
        "A": sorted("%s=%s" % (r["name"], r["ipv4addr"]) for r in
                    grid.tagged("record:a", instance_uuid, "name,ipv4addr")),
        "AAAA": sorted("%s=%s" % (r["name"], r["ipv6addr"]) for r in
                       grid.tagged("record:aaaa", instance_uuid, "name,ipv6addr")),
        "PTR": sorted("%s=%s" % (r["ptrdname"], r.get("ipv4addr") or r.get("ipv6addr"))
                      for r in grid.tagged("record:ptr", instance_uuid,
                                           "ptrdname,ipv4addr,ipv6addr")),
    }


class GridDnsReader(DnsReader):
    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def forward(self, fqdn: str) -> List[str]:
        return sorted([r["ipv4addr"] for r in self.grid.get("record:a", name=fqdn,
                                                             _return_fields="ipv4addr")] +
                      [r["ipv6addr"] for r in self.grid.get("record:aaaa", name=fqdn,
                                                             _return_fields="ipv6addr")])

    def ptr(self, address: str) -> List[str]:
        field = "ipv%daddr" % ipaddress.ip_address(address).version
        return sorted(r["ptrdname"] for r in self.grid.get(
            "record:ptr", _return_fields="ptrdname", **{field: address}))

    def plant(self, fqdn: str, address: str) -> None:
        self.grid.post("record:a", {"name": fqdn, "ipv4addr": address})


class TestInfobloxDns(grid_fixtures("dns", InfobloxDns, GridDnsReader), DnsContract):
    @pytest.fixture
    def dns_space(self) -> DnsSpace:
        return DnsSpace(ZONE, unique_v4, unique_v6)


def test_register_writes_tagged_a_aaaa_and_ptrs(grid: Grid, driver: InfobloxDns) -> None:
    ev = make_event()
    v4, v6 = unique_v4(), unique_v6()
    fqdn = "ibd-a.cloud.example.test"
    driver.register(fqdn, ev.uuid, [Address(v4, 4), Address(v6, 6)])
    driver.register(fqdn, ev.uuid, [Address(v4, 4), Address(v6, 6)])
    assert dns_held(grid, ev.uuid) == {"A": ["%s=%s" % (fqdn, v4)],
                                       "AAAA": ["%s=%s" % (fqdn, v6)],
                                       "PTR": sorted(["%s=%s" % (fqdn, v4), "%s=%s" % (fqdn, v6)])}
    (record,) = grid.get("record:a", name=fqdn, _return_fields="ttl,use_ttl,zone")
    assert record["ttl"] == 600 and record["use_ttl"] is True and record["zone"] == ZONE
    (ptr,) = grid.get("record:ptr", ipv6addr=v6, _return_fields="name,zone")
    assert ptr["name"].endswith(".8.b.d.0.1.0.0.2.ip6.arpa") and ptr["zone"] == "2001:db8::/32"
    seen = driver.describe(fqdn, ev.uuid, [v4, v6])
    assert seen == {"A": [v4], "AAAA": [v6], "owned": True, "PTR": {v4: [fqdn], v6: [fqdn]}}
    driver.deregister(fqdn, ev.uuid, [])


def test_new_address_and_new_name_move_every_record(grid: Grid, driver: InfobloxDns) -> None:
    ev = make_event()
    old, new = unique_v4(), unique_v4()
    driver.register("ibd-b.cloud.example.test", ev.uuid, [Address(old, 4)])
    driver.register("ibd-c.cloud.example.test", ev.uuid, [Address(new, 4)])
    assert dns_held(grid, ev.uuid) == {"A": ["ibd-c.cloud.example.test=%s" % new], "AAAA": [],
                                       "PTR": ["ibd-c.cloud.example.test=%s" % new]}
    assert grid.get("record:ptr", ipv4addr=old) == []
    driver.deregister("ibd-c.cloud.example.test", ev.uuid, [])


def test_the_instance_ipam_host_record_is_not_a_dns_conflict(
        grid: Grid, settings: Settings, driver: InfobloxDns) -> None:
    ev = make_event()
    v4 = unique_v4()
    InfobloxIpam(settings.ipam).ensure(ev.uuid, "ibd-h.cloud.example.test", [Address(v4, 4)])
    driver.register("ibd-h.cloud.example.test", ev.uuid, [Address(v4, 4)])
    assert dns_held(grid, ev.uuid)["A"] == ["ibd-h.cloud.example.test=%s" % v4]
    driver.deregister("ibd-h.cloud.example.test", ev.uuid, [])
    InfobloxIpam(settings.ipam).release(ev.uuid)


def test_check_names_a_zone_the_grid_does_not_serve(wapi: WapiServer, tmp_path: Path,
                                                    driver: InfobloxDns) -> None:
    assert "2 reverse zone(s)" in driver.check()
    settings = configure(wapi, tmp_path, reverse_zones="10.in-addr.arpa, 168.192.in-addr.arpa")
    with pytest.raises(OutOfScope, match="168.192.in-addr.arpa"):
        InfobloxDns(settings.dns).check()


def test_naming_prefix_zone_puts_an_address_in_scope_and_is_checked(
        grid: Grid, wapi: WapiServer, tmp_path: Path) -> None:
    """A [naming prefix] rule's reverse zone counts as the RFC 2136 driver counts it."""
    only_v4 = InfobloxDns(configure(wapi, tmp_path, reverse_zones="10.in-addr.arpa").dns)
    ev, v6 = make_event(), unique_v6()
    with pytest.raises(OutOfScope, match=v6):
        only_v4.register("ibd-l.cloud.example.test", ev.uuid, [Address(v6, 6)])
    only_v4.reverse_prefixes = [(ipaddress.ip_network("2001:db8::/32"),
                                 "8.b.d.0.1.0.0.2.ip6.arpa")]  # as tasks/drivers.py sets it
    assert "2 reverse zone(s)" in only_v4.check()
    only_v4.register("ibd-l.cloud.example.test", ev.uuid, [Address(v6, 6)])
    assert dns_held(grid, ev.uuid)["PTR"] == ["ibd-l.cloud.example.test=%s" % v6]
    only_v4.deregister("ibd-l.cloud.example.test", ev.uuid, [])
    only_v4.reverse_prefixes = [(ipaddress.ip_network("192.168.0.0/16"),
                                 "168.192.in-addr.arpa")]
    with pytest.raises(OutOfScope, match="168.192.in-addr.arpa"):
        only_v4.check()


def _round_trips(driver: Any) -> List[str]:
    """Each request the driver's WAPI session sends, as "METHOD object" (``request``: the
    WAPI request object carrying several calls)."""
    seen: List[str] = []
    driver.wapi.session.hooks["response"].append(
        lambda response, *args, **kwargs: seen.append("%s %s" % (
            response.request.method, response.request.path_url.split("?")[0].rsplit("/")[-1])))
    return seen


def test_a_vm_is_one_round_trip_of_searches_then_one_of_writes_per_step(
        settings: Settings, grid: Grid) -> None:
    """IPAM's preflight and ensure and DNS's register and deregister each search once
    (every search in one request object) and write at most once; before, a VM with two
    addresses took 5 WAPI calls for IPAM's preflight, 7 for its ensure, 13 for DNS's
    register and 7 for its deregister (bench/infoblox_calls.py, baseline 6dc82ba)."""
    ipam, driver = InfobloxIpam(settings.ipam), InfobloxDns(settings.dns)
    for each in (ipam, driver):
        each.wapi.ensure_uuid_attribute()  # once per grid and process
    ev = make_event(addresses=[Address(unique_v4(), 4), Address(unique_v6(), 6)])
    fqdn = "ib-rt.%s" % ZONE
    ipam_calls, dns_calls = _round_trips(ipam), _round_trips(driver)
    ipam.preflight(ev.uuid, fqdn, ev.addresses)
    ipam.ensure(ev.uuid, fqdn, ev.addresses)
    assert ipam_calls == ["POST request"] * 3, "the create too, as a request of one call " \
        "that can merge with other steps' (test_infoblox_batching.py)"
    driver.register(fqdn, ev.uuid, ev.addresses)
    assert dns_calls == ["POST request", "POST request"]
    v4, v6 = ev.addresses[0].address, ev.addresses[1].address
    assert dns_held(grid, ev.uuid) == {"A": ["%s=%s" % (fqdn, v4)],
                                       "AAAA": ["%s=%s" % (fqdn, v6)],
                                       "PTR": sorted(["%s=%s" % (fqdn, v4),
                                                      "%s=%s" % (fqdn, v6)])}
    del dns_calls[:]
    driver.register(fqdn, ev.uuid, ev.addresses)
    assert dns_calls == ["POST request"], "nothing to write: the searches alone"
    del dns_calls[:]
    driver.deregister(fqdn, ev.uuid, ev.addresses)
    assert dns_calls == ["POST request", "POST request"]
    assert dns_held(grid, ev.uuid) == {"A": [], "AAAA": [], "PTR": []}
    ipam.release(ev.uuid)


def test_a_record_the_grid_refuses_leaves_none_of_the_others_written(
        wapi: WapiServer, grid: Grid, tmp_path: Path) -> None:
    """The writes of a register go as one request, which the grid runs as one
    transaction: 192.168.1.0/24 is in scope by [dns] reverse_zones, but the grid holds no
    reverse zone for it, so its PTR is refused, and the A record sent with it is not
    kept either (when each record was its own call, the A stayed: half-written)."""
    settings = configure(wapi, tmp_path, reverse_zones=REVERSE_ZONES + ", 168.192.in-addr.arpa")
    driver = InfobloxDns(settings.dns)
    ev = make_event(addresses=[Address("192.168.1.%d" % (int(unique_v4().split(".")[-1]) or 1),
                                       4)])
    with pytest.raises(StepError, match="parent was not found"):
        driver.register("ib-tx.%s" % ZONE, ev.uuid, ev.addresses)
    assert dns_held(grid, ev.uuid) == {"A": [], "AAAA": [], "PTR": []}
    assert grid.get("record:a", name="ib-tx.%s" % ZONE) == []
