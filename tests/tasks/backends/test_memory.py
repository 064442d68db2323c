"""The memory drivers run every kind's contract, as the real drivers do, with no server.

Each test gets a backend of its own (``memory://<test's own name>``); the
readers look into that backend's store, as the real drivers' readers query
their servers, never through the driver under test.
"""

import uuid
from typing import Any, Dict, List

import pytest

from novahooks.settings import (AuditSettings, DirectorySettings, DnsSettings, InventorySettings,
                                IpamSettings, Secret)
from tasks.backends import memory
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


def down(store: memory.Backend) -> memory.Backend:
    store.up = False
    return store


def guarded(store: memory.Backend) -> memory.Backend:
    store.secret = SECRET
    return store


class MemoryIpamReader(IpamReader):
    def __init__(self, store: IpamStore) -> None:
        self.store = store

    def held(self, instance_uuid: str) -> List[str]:
        return self.store.held_by(instance_uuid)

    def name_of(self, address: str) -> str:
        return str(self.store.addresses[address]["dns_name"])


class TestMemoryIpam(IpamContract):
    @pytest.fixture
    def ipam(self, url: str) -> MemoryIpam:
        memory.backend(IpamStore, url).prefixes = ["10.20.0.0/16", "2001:db8:20::/64"]
        return MemoryIpam(IpamSettings({"driver": "memory", "url": url}))

    @pytest.fixture
    def ipam_reader(self, url: str) -> MemoryIpamReader:
        return MemoryIpamReader(memory.backend(IpamStore, url))

    @pytest.fixture
    def ipam_bad_credentials(self, url: str) -> MemoryIpam:
        guarded(memory.backend(IpamStore, url))
        return MemoryIpam(IpamSettings({"url": url, "token": Secret("wrong")}))

    @pytest.fixture
    def ipam_unreachable(self, url: str) -> MemoryIpam:
        down(memory.backend(IpamStore, url))
        return MemoryIpam(IpamSettings({"url": url}))

    def test_a_guarded_backend_takes_its_own_secret(self, url: str) -> None:
        guarded(memory.backend(IpamStore, url))
        assert "accepted" in MemoryIpam(IpamSettings({"url": url,
                                                      "token": Secret(SECRET)})).check()

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


def dns_settings(url: str, **over: Any) -> DnsSettings:
    values: Dict[str, Any] = {"driver": "memory", "url": url, "zone": ZONE,
                              "reverse_zones": REVERSE}
    values.update(over)
    return DnsSettings(values)


class TestMemoryDns(DnsContract):
    @pytest.fixture
    def dns(self, url: str) -> MemoryDns:
        memory.backend(DnsStore, url).zones = {ZONE} | set(REVERSE)
        return MemoryDns(dns_settings(url))

    @pytest.fixture
    def dns_space(self) -> DnsSpace:
        return DnsSpace(ZONE, unique_v4, unique_v6)

    @pytest.fixture
    def dns_reader(self, url: str) -> MemoryDnsReader:
        return MemoryDnsReader(memory.backend(DnsStore, url))

    @pytest.fixture
    def dns_bad_credentials(self, url: str) -> MemoryDns:
        guarded(memory.backend(DnsStore, url))
        return MemoryDns(dns_settings(url, tsig_secret=Secret("wrong")))

    @pytest.fixture
    def dns_unreachable(self, url: str) -> MemoryDns:
        down(memory.backend(DnsStore, url))
        return MemoryDns(dns_settings(url))

    def test_check_names_a_zone_the_backend_does_not_serve(self, url: str) -> None:
        memory.backend(DnsStore, url).zones = {ZONE, "10.in-addr.arpa"}
        with pytest.raises(OutOfScope, match="8.b.d.0.1.0.0.2.ip6.arpa"):
            MemoryDns(dns_settings(url)).check()


class MemoryDirectoryReader(DirectoryReader):
    def __init__(self, store: DirectoryStore) -> None:
        self.store = store

    def held(self, instance_uuid: str) -> List[Dict[str, Any]]:
        return [{"name": key, "addresses": self.store.entries[key]["addresses"]}
                for key in self.store.owned_by(instance_uuid)]

    def plant(self, hostname: str) -> None:
        self.store.entries[hostname.lower()] = {"name": hostname, "owners": [],
                                                "addresses": [], "macs": []}


class TestMemoryDirectory(DirectoryContract):
    @pytest.fixture
    def directory(self, url: str) -> MemoryDirectory:
        return MemoryDirectory(DirectorySettings({"driver": "memory", "url": url}))

    @pytest.fixture
    def directory_event(self) -> Any:
        return make_event

    @pytest.fixture
    def directory_reader(self, url: str) -> MemoryDirectoryReader:
        return MemoryDirectoryReader(memory.backend(DirectoryStore, url))

    @pytest.fixture
    def directory_bad_credentials(self, url: str) -> MemoryDirectory:
        guarded(memory.backend(DirectoryStore, url))
        return MemoryDirectory(DirectorySettings({"url": url, "password": Secret("wrong")}))

    @pytest.fixture
    def directory_unreachable(self, url: str) -> MemoryDirectory:
        down(memory.backend(DirectoryStore, url))
        return MemoryDirectory(DirectorySettings({"url": url}))


class MemoryInventoryReader(InventoryReader):
    def __init__(self, store: InventoryStore) -> None:
        self.store = store

    def records(self, instance_uuid: str) -> List[Dict[str, Any]]:
        return [{"name": r["name"], "status": r["status"]}
                for r in self.store.records.values() if r["uuid"] == instance_uuid]

    def forget(self, instance_uuid: str) -> None:
        for record in [r for r in self.store.records.values() if r["uuid"] == instance_uuid]:
            del self.store.records[record["id"]]


def inventory_settings(url: str, **over: Any) -> InventorySettings:
    return InventorySettings(dict({"driver": "memory", "url": url}, **over))


class TestMemoryInventory(InventoryContract):
    @pytest.fixture
    def inventory(self, url: str) -> MemoryInventory:
        return MemoryInventory(inventory_settings(url))

    @pytest.fixture
    def inventory_decommissioning(self, url: str) -> MemoryInventory:
        return MemoryInventory(inventory_settings(url, on_delete="decommission"))

    @pytest.fixture
    def inventory_reader(self, url: str) -> MemoryInventoryReader:
        return MemoryInventoryReader(memory.backend(InventoryStore, url))

    @pytest.fixture
    def inventory_bad_credentials(self, url: str) -> MemoryInventory:
        guarded(memory.backend(InventoryStore, url))
        return MemoryInventory(inventory_settings(url, token=Secret("wrong")))

    @pytest.fixture
    def inventory_unreachable(self, url: str) -> MemoryInventory:
        down(memory.backend(InventoryStore, url))
        return MemoryInventory(inventory_settings(url))

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


class TestMemoryAudit(AuditContract):
    @pytest.fixture
    def audit(self, url: str) -> MemoryAudit:
        return MemoryAudit(AuditSettings({"drivers": ["memory"], "path": url}))

    @pytest.fixture
    def audit_reader(self, url: str) -> MemoryAuditReader:
        return MemoryAuditReader(memory.backend(AuditStore, url))

    @pytest.fixture
    def audit_unreachable(self, url: str) -> MemoryAudit:
        down(memory.backend(AuditStore, url))
        return MemoryAudit(AuditSettings({"path": url}))

    def test_an_entry_that_is_not_json_is_refused(self, audit: MemoryAudit,
                                                  audit_reader: MemoryAuditReader) -> None:
        with pytest.raises(PermanentError, match="JSON"):
            audit.record({"instance_uuid": object()})
        assert audit_reader.records() == []
