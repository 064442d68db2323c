"""The driver groups as installed: every kind offers ``memory``, every driver keeps its
kind's contract, and ``driver = memory`` loads through the same path as a real driver."""

from importlib.metadata import entry_points

import pytest

from novahooks.settings import IpamSettings
from tasks.backends.audit.base import AuditDriver
from tasks.backends.base import Driver
from tasks.backends.directory.base import DirectoryDriver
from tasks.backends.dns.base import DnsDriver
from tasks.backends.inventory.base import InventoryDriver
from tasks.backends.ipam.base import IpamDriver
from tasks.backends.ipam.memory import MemoryIpam
from tasks.drivers import driver_class, load

KINDS = {"ipam": IpamDriver, "dns": DnsDriver, "directory": DirectoryDriver,
         "inventory": InventoryDriver, "audit": AuditDriver}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_group_offers_a_memory_driver_of_its_kind(kind: str) -> None:
    assert issubclass(driver_class(kind, "memory"), KINDS[kind])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_registered_driver_keeps_its_kinds_contract(kind: str) -> None:
    found = {entry.name: entry.load() for entry in entry_points(group="novahooks." + kind)}
    assert len(found) >= 3, found  # memory and the two real ones
    for name, cls in found.items():
        assert issubclass(cls, KINDS[kind]) and issubclass(cls, Driver), name
        assert not getattr(cls, "__abstractmethods__", None), (name, cls.__abstractmethods__)


def test_driver_memory_loads_as_a_configured_driver_does() -> None:
    driver = load("ipam", "memory", IpamSettings({"driver": "memory",
                                                 "url": "memory://registry-test"}))
    assert isinstance(driver, MemoryIpam) and "registry-test" in driver.check()
