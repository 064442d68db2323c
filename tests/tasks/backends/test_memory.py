"""The memory drivers run every kind's contract, as the real drivers do, with no server.

Each test gets a backend of its own (``memory://<test's own name>``); the
readers look into that backend's store, as the real drivers' readers query
their servers, never through the driver under test.
"""

import uuid
from typing import Any, Dict, List, Type

import pytest

from novahooks.settings import (AuditSettings, DirectorySettings, DnsSettings, InventorySettings,
                                IpamSettings, Secret)
from tasks.backends import memory
from tasks.backends.memory import MemoryDriver
from tasks.backends.audit.memory import AuditStore, MemoryAudit
from tasks.backends.directory.memory import DirectoryStore, MemoryDirectory
from tasks.backends.dns.memory import DnsStore, MemoryDns
from tasks.backends.inventory.memory import InventoryStore, MemoryInventory
from tasks.backends.ipam.memory import IpamStore, MemoryIpam
from tasks.errors import Conflict, Misconfigured, OutOfScope, PermanentError
from tests.conftest import make_event, unique_v4, unique_v6
from tests.tasks.backends.audit_contract import AuditContract, AuditReader
from tests.tasks.backends.directory_contract import DirectoryContract, DirectoryReader
from tests.tasks.backends.dns_contract import DnsContract, DnsReader, DnsSpace
from tests.tasks.backends.inventory_contract import InventoryContract, InventoryReader
from tests.tasks.backends.ipam_contract import IpamContract, IpamReader

SECRET = "the-right-secret"


@pytest.fixture
def url() -> str:
    return "memory://test-%s" % uuid.uuid4().hex


def memory_fixtures(kind: str, driver: Type[MemoryDriver], section: Type[Any],
                    **values: Any) -> type:
    """The three driver fixtures a contract asks for, named after its kind: the driver on
    this test's backend, the same with a secret the backend does not take, and with the
    backend down. ``seed(store)`` prepares the backend as its admin would."""
    location = driver.LOCATION

    def build(url: str, **extra: Any) -> MemoryDriver:
        return driver(section(dict(values, **{location: url}, **extra)))

    class Fixtures(object):
        def seed(self, store: Any) -> None:
            """Nothing to prepare, unless a kind's backend wants it."""

        @pytest.fixture(name=kind)
        def under_test(self, url: str) -> MemoryDriver:
            self.seed(memory.backend(driver.BACKEND, url))
            return build(url)

        @pytest.fixture(name=kind + "_bad_credentials")
        def bad_credentials(self, url: str) -> MemoryDriver:
            memory.backend(driver.BACKEND, url).secret = SECRET
            return build(url, **({driver.SECRET: Secret("wrong")} if driver.SECRET else {}))

        @pytest.fixture(name=kind + "_unreachable")
        def unreachable(self, url: str) -> MemoryDriver:
            memory.backend(driver.BACKEND, url).up = False
            return build(url)

    return Fixtures


class MemoryIpamReader(IpamReader):
    def __init__(self, store: IpamStore) -> None:
        self.store = store

    def held(self, instance_uuid: str) -> List[str]:
        return self.store.held_by(instance_uuid)

    def name_of(self, address: str) -> str:
        return str(self.store.addresses[address]["dns_name"])


class TestMemoryIpam(memory_fixtures("ipam", MemoryIpam, IpamSettings), IpamContract):
    def seed(self, store: IpamStore) -> None:
        store.prefixes = ["10.20.0.0/16", "2001:db8:20::/64"]

    @pytest.fixture
    def ipam_reader(self, url: str) -> MemoryIpamReader:
        return MemoryIpamReader(memory.backend(IpamStore, url))

    def test_a_guarded_backend_takes_its_own_secret(self, url: str) -> None:
        memory.backend(IpamStore, url).secret = SECRET
        assert "accepted" in MemoryIpam(IpamSettings({"url": url,
                                                      "token": Secret(SECRET)})).check()

    def test_prefix_of_is_the_most_specific_seeded_prefix(self, ipam: MemoryIpam,
                                                          url: str) -> None:
        memory.backend(IpamStore, url).prefixes = ["10.20.0.0/16", "10.20.7.0/24"]
        assert str(ipam.prefix_of("10.20.7.9")) == "10.20.7.0/24"
        assert str(ipam.prefix_of("10.20.8.9")) == "10.20.0.0/16"
        assert ipam.prefix_of("172.30.0.1") is None

    def test_a_url_of_another_scheme_is_misconfigured(self) -> None:
        with pytest.raises(Misconfigured, match="memory://"):
            MemoryIpam(IpamSettings({"url": "https://netbox.example.com"}))


class MemoryDnsReader(DnsReader):
    def __init__(self, store: DnsStore) -> None:
        self.store = store

    def forward(self, fqdn: str) -> List[str]:
        held = self.store.names.get(fqdn.lower(), {"A": set(), "AAAA": set()})
        return sorted(held["A"] | held["AAAA"])

    def ptr(self, address: str) -> List[str]:
        return sorted(self.store.ptrs.get(address, ()))

    def plant(self, fqdn: str, address: str) -> None:
        self.store.names[fqdn.lower()] = {"owner": None, "A": {address}, "AAAA": set()}


ZONE = "cloud.example.test"
REVERSE = ["10.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa"]


class TestMemoryDns(memory_fixtures("dns", MemoryDns, DnsSettings, zone=ZONE,
                                    reverse_zones=REVERSE), DnsContract):
    def seed(self, store: DnsStore) -> None:
        store.zones = {ZONE} | set(REVERSE)

    @pytest.fixture
    def dns_space(self) -> DnsSpace:
        return DnsSpace(ZONE, unique_v4, unique_v6)

    @pytest.fixture
    def dns_reader(self, url: str) -> MemoryDnsReader:
        return MemoryDnsReader(memory.backend(DnsStore, url))

    def test_check_names_a_zone_the_backend_does_not_serve(self, url: str) -> None:
        memory.backend(DnsStore, url).zones = {ZONE, "10.in-addr.arpa"}
        with pytest.raises(OutOfScope, match="8.b.d.0.1.0.0.2.ip6.arpa"):
            MemoryDns(DnsSettings({"url": url, "zone": ZONE, "reverse_zones": REVERSE})).check()


class MemoryDirectoryReader(DirectoryReader):
    def __init__(self, store: DirectoryStore) -> None:
        self.store = store

    def held(self, instance_uuid: str) -> List[Dict[str, Any]]:
        return [{"name": key, "addresses": self.store.entries[key]["addresses"]}
                for key in self.store.owned_by(instance_uuid)]

    def plant(self, hostname: str) -> None:
        self.store.entries[hostname.lower()] = {"name": hostname, "owners": [],
                                                "addresses": [], "macs": []}


class TestMemoryDirectory(memory_fixtures("directory", MemoryDirectory, DirectorySettings),
                          DirectoryContract):
    @pytest.fixture
    def directory_reader(self, url: str) -> MemoryDirectoryReader:
        return MemoryDirectoryReader(memory.backend(DirectoryStore, url))


class MemoryInventoryReader(InventoryReader):
    def __init__(self, store: InventoryStore) -> None:
        self.store = store

    def held(self, instance_uuid: str) -> List[Dict[str, Any]]:
        return [{"name": r["name"], "status": r["status"]}
                for r in self.store.records.values() if r["uuid"] == instance_uuid]

    def forget(self, instance_uuid: str) -> None:
        for record in [r for r in self.store.records.values() if r["uuid"] == instance_uuid]:
            del self.store.records[record["id"]]


class TestMemoryInventory(memory_fixtures("inventory", MemoryInventory, InventorySettings),
                          InventoryContract):
    @pytest.fixture
    def inventory_decommissioning(self, url: str) -> MemoryInventory:
        return MemoryInventory(InventorySettings({"url": url, "on_delete": "decommission"}))

    @pytest.fixture
    def inventory_reader(self, url: str) -> MemoryInventoryReader:
        return MemoryInventoryReader(memory.backend(InventoryStore, url))

    def test_a_name_another_instance_holds_is_a_conflict(self, inventory: MemoryInventory,
                                                         url: str) -> None:
        """NetBox's rule (one name per cluster), which the memory driver keeps."""
        first = make_event(addresses=[])
        inventory.register(first)
        with pytest.raises(Conflict, match=first.hostname):
            inventory.register(make_event(hostname=first.hostname, addresses=[]))
        assert len(memory.backend(InventoryStore, url).records) == 1


class MemoryAuditReader(AuditReader):
    def __init__(self, store: AuditStore) -> None:
        self.store = store

    def records(self) -> List[Dict[str, Any]]:
        return list(self.store.records)


class TestMemoryAudit(memory_fixtures("audit", MemoryAudit, AuditSettings), AuditContract):
    @pytest.fixture
    def audit_reader(self, url: str) -> MemoryAuditReader:
        return MemoryAuditReader(memory.backend(AuditStore, url))

    def test_an_entry_that_is_not_json_is_refused(self, audit: MemoryAudit,
                                                  audit_reader: MemoryAuditReader) -> None:
        with pytest.raises(PermanentError, match="JSON"):
            audit.record({"instance_uuid": object()})
        assert audit_reader.records() == []
