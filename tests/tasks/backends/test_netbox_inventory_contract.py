"""The NetBox inventory driver runs the inventory contract against a real NetBox.

Read back with pynetbox as NetBox's admin. What is NetBox's own (interfaces,
MACs, primary addresses, one name per cluster) is in test_netbox.py.
"""

from typing import Any, Dict, List

import pynetbox
import pytest

from novahooks.settings import Settings, load_settings
from tasks.backends.inventory.netbox import NetBoxInventory
from tasks.backends.netbox.client import UUID_FIELD
from tests.servers.base import free_port
from tests.servers.stack import Stack
from tests.tasks.backends.inventory_contract import InventoryContract, InventoryReader


class NetBoxInventoryReader(InventoryReader):
    def __init__(self, api: pynetbox.api) -> None:
        self.api = api

    def _vms(self, instance_uuid: str) -> List[Any]:
        return [vm for vm in self.api.virtualization.virtual_machines.filter(
            **{"cf_" + UUID_FIELD: instance_uuid})
            if (vm.custom_fields or {}).get(UUID_FIELD) == instance_uuid]

    def records(self, instance_uuid: str) -> List[Dict[str, Any]]:
        return [{"name": vm.name, "status": vm.status.value} for vm in self._vms(instance_uuid)]

    def forget(self, instance_uuid: str) -> None:
        for vm in self._vms(instance_uuid):
            vm.delete()


class TestNetBoxInventory(InventoryContract):
    @pytest.fixture
    def inventory(self, settings: Settings) -> NetBoxInventory:
        return NetBoxInventory(settings.inventory)

    @pytest.fixture
    def inventory_decommissioning(self, stack: Stack) -> NetBoxInventory:
        return NetBoxInventory(load_settings(str(stack.config_path), {
            "NOVAHOOKS_INVENTORY_ON_DELETE": "decommission"}).inventory)

    @pytest.fixture
    def inventory_reader(self, stack: Stack) -> NetBoxInventoryReader:
        return NetBoxInventoryReader(pynetbox.api(stack.netbox.url, token=stack.netbox.token))

    @pytest.fixture
    def inventory_bad_credentials(self, stack: Stack) -> NetBoxInventory:
        return NetBoxInventory(load_settings(str(stack.config_path), {
            "NOVAHOOKS_INVENTORY_TOKEN": "0" * 40}).inventory)

    @pytest.fixture
    def inventory_unreachable(self, stack: Stack) -> NetBoxInventory:
        return NetBoxInventory(load_settings(str(stack.config_path), {
            "NOVAHOOKS_INVENTORY_URL": "http://127.0.0.1:%d" % free_port(),
            "NOVAHOOKS_INVENTORY_TIMEOUT": "2"}).inventory)
