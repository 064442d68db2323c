"""NetBox virtualization as inventory: VM, interfaces with MACs, assigned addresses.

Interfaces are named after the Nova network label (``private``, ``private-2``
when a VM has two ports on one network) and matched by MAC address, so a port
attach or detach changes only that interface.
"""

from typing import Any, Dict, List, Optional

import pynetbox

from novahooks.event import Address, InstanceEvent
from tasks.backends.inventory.base import InventoryDriver, status_of
from tasks.backends.netbox import client
from tasks.errors import Conflict, Misconfigured

BACKEND = "inventory"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:100] or "nova"


class NetBoxInventory(InventoryDriver):
    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        if settings.on_delete not in ("delete", "decommission"):
            raise Misconfigured("[inventory] on_delete must be delete or decommission, not %r"
                                % settings.on_delete, backend=BACKEND)
        self.api = client.connect(settings, BACKEND)
        self._cluster_id = None  # type: Optional[int]

    def _cluster(self) -> int:
        if self._cluster_id is None:
            client.ensure_custom_fields(self.api)
            slug = _slug(self.settings.cluster_type)
            ctype = client.get_or_create(self.api.virtualization.cluster_types, {"slug": slug},
                                         {"name": self.settings.cluster_type, "slug": slug})
            cluster = client.get_or_create(
                self.api.virtualization.clusters, {"name": self.settings.cluster},
                {"name": self.settings.cluster, "type": ctype.id, "status": "active"})
            self._cluster_id = int(cluster.id)
        return self._cluster_id

    def find(self, instance_uuid: str) -> Optional[Any]:
        found = client.owned_by(self.api.virtualization.virtual_machines, instance_uuid)
        return min(found, key=lambda vm: int(vm.id)) if found else None

    def register(self, event: InstanceEvent) -> Dict[str, Any]:
        with client.translated(BACKEND, self.settings.url):
            cluster = self._cluster()
            vm = self.find(event.uuid)
            if vm is None or vm.name != event.hostname:
                for other in self.api.virtualization.virtual_machines.filter(
                        name=event.hostname, cluster_id=cluster):
                    owner = (other.custom_fields or {}).get(client.UUID_FIELD)
                    if owner != event.uuid:
                        raise Conflict("a VM named %s already exists in cluster %s (id %s, "
                                       "instance %s)" % (event.hostname, self.settings.cluster,
                                                         other.id, owner or "unmanaged"),
                                       backend=BACKEND)
            flavor = event.flavor
            fields = {
                "name": event.hostname, "cluster": cluster, "status": status_of(event),
                "vcpus": flavor.vcpus if flavor else None,
                "memory": flavor.memory_mb if flavor else None,
                "disk": ((flavor.root_gb or 0) + (flavor.ephemeral_gb or 0)) * 1000
                if flavor else None,
                "comments": "flavor %s, image %s, os %s" % (
                    flavor.name if flavor else "?", event.image or "?", event.os_type or "?"),
                "custom_fields": {client.UUID_FIELD: event.uuid,
                                  client.PROJECT_FIELD: event.project_id},
            }
            if vm is None:
                with client.raced(BACKEND, "VM %s" % event.hostname):
                    vm = self.api.virtualization.virtual_machines.create(**fields)
                action = "created"
            else:
                if event.addresses is None:
                    # A pre-boot event may be handled after the build's: never let it
                    # turn an active VM back into a planned one.
                    del fields["status"]
                vm.update(fields)
                action = "updated"
            interfaces = [] if event.addresses is None else \
                self._sync_interfaces(vm, event.addresses)
        return {"vm": int(vm.id), "action": action, "interfaces": interfaces}

    def _sync_interfaces(self, vm: Any, addresses: List[Address]) -> List[str]:
        api = self.api
        existing = {i.name: i for i in api.virtualization.interfaces.filter(
            virtual_machine_id=vm.id)}
        by_mac = {}  # type: Dict[str, List[Address]]
        for item in addresses:
            by_mac.setdefault(item.mac or "", []).append(item)
        wanted = {}  # type: Dict[str, List[Address]]
        for _, items in sorted(by_mac.items()):
            base = items[0].network or "eth"
            name, n = base, 1
            while name in wanted:
                n += 1
                name = "%s-%d" % (base, n)
            wanted[name] = items
        primary = {}  # type: Dict[str, int]
        for name, items in wanted.items():
            iface = existing.pop(name, None)
            if iface is None:
                with client.raced(BACKEND, "interface %s" % name):
                    iface = api.virtualization.interfaces.create(virtual_machine=vm.id, name=name)
            mac = items[0].mac
            if mac:
                self._ensure_mac(iface, mac)
            for item in items:
                for ip in client.owned_by(api.ipam.ip_addresses,
                                          vm.custom_fields.get(client.UUID_FIELD),
                                          address=item.address):
                    if ip.assigned_object_id != iface.id:
                        ip.update({"assigned_object_type": "virtualization.vminterface",
                                   "assigned_object_id": iface.id})
                    primary.setdefault("primary_ip%d" % item.version, int(ip.id))
        for stale in existing.values():
            stale.delete()
        vm.update({"primary_ip4": primary.get("primary_ip4"),
                   "primary_ip6": primary.get("primary_ip6")})
        return sorted(wanted)

    def _ensure_mac(self, iface: Any, mac: str) -> None:
        macs = self.api.dcim.mac_addresses
        record = client.first(macs, mac_address=mac, vminterface_id=iface.id)
        if record is None:
            with client.raced(BACKEND, "MAC %s" % mac):
                record = macs.create(mac_address=mac,
                                     assigned_object_type="virtualization.vminterface",
                                     assigned_object_id=iface.id)
        if getattr(iface, "primary_mac_address", None) is None or \
                iface.primary_mac_address.id != record.id:
            iface.update({"primary_mac_address": record.id})

    def deregister(self, event: InstanceEvent) -> Dict[str, Any]:
        with client.translated(BACKEND, self.settings.url):
            vm = self.find(event.uuid)
            if vm is None:
                return {"vm": None}
            if self.settings.on_delete == "delete":
                vm.delete()
                return {"vm": int(vm.id), "action": "deleted"}
            # NetBox refuses to unassign an address that is still a primary IP.
            vm.update({"status": "decommissioning", "primary_ip4": None, "primary_ip6": None})
            for ip in self.api.ipam.ip_addresses.filter(virtual_machine_id=vm.id):
                ip.update({"assigned_object_type": None, "assigned_object_id": None})
        return {"vm": int(vm.id), "action": "decommissioned"}

    def describe(self, instance_uuid: str) -> Dict[str, Any]:
        with client.translated(BACKEND, self.settings.url):
            self._cluster()
            vm = self.find(instance_uuid)
            if vm is None:
                return {}
            try:
                interfaces = sorted(i.name for i in self.api.virtualization.interfaces.filter(
                    virtual_machine_id=vm.id))
            except pynetbox.RequestError:
                if self.find(instance_uuid) is None:
                    return {}  # deleted between the two reads
                raise
            return {"id": int(vm.id), "name": vm.name, "status": str(vm.status.value),
                    "vcpus": vm.vcpus, "memory": vm.memory, "interfaces": interfaces,
                    "primary_ip4": str(vm.primary_ip4) if vm.primary_ip4 else None,
                    "primary_ip6": str(vm.primary_ip6) if vm.primary_ip6 else None}

    def check(self) -> str:
        return client.check(self.api, BACKEND, self.settings.url)

    def managed(self) -> Dict[str, Dict[str, Any]]:
        with client.translated(BACKEND, self.settings.url):
            cluster = self._cluster()
            return {vm.custom_fields[client.UUID_FIELD]: {"name": vm.name,
                                                          "status": str(vm.status.value)}
                    for vm in client.managed(self.api.virtualization.virtual_machines,
                                             cluster_id=cluster)}
