"""NetBox virtualization as inventory: VM, interfaces with MACs, assigned addresses.

One interface per Neutron port, matched by MAC (or by port id where the event
has it), named after the network label (``private``; ``private-2`` for a second
port on one network) when it is made and never renamed. So an attach adds one
interface, its MAC object and its addresses; a detach removes those; a primary
IP stays where it is while its address is still on the VM.

What the last run wrote (object ids and values) is in the ledger, which the
step hands in as ``made``: the driver writes only what differs, by id, without
reading first. A first register creates the VM without looking for its name:
NetBox refuses a name already in the cluster (its constraint: any case, among
VMs without a tenant), and only then is the holder read. It reads NetBox when
called without a ledger, or when a write shows the ledger is behind (an id
NetBox no longer has, a duplicate): then it reads the VM, its interfaces and
addresses, and applies again.
"""

from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import pynetbox

from novahooks.event import Address, InstanceEvent
from tasks.backends.inventory.base import (InventoryDeregistered, InventoryDriver, InventoryHeld,
                                           InventoryRegistered, status_of)
from tasks.backends.netbox import client
from tasks.errors import Conflict, Misconfigured, TransientError

BACKEND = "inventory"
IFACE_TYPE = "virtualization.vminterface"
#: An interface's description names its Neutron port, so a read finds the port again.
PORT_NOTE = "Neutron port "


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:100] or "nova"


class Port(NamedTuple):
    """One VM interface as this driver made it: its id, name, MAC, port and addresses."""

    id: int
    name: str
    mac: str
    port_id: Optional[str]
    #: address -> NetBox IPAddress id assigned to this interface
    addresses: Dict[str, int]


class Held(NamedTuple):
    """What NetBox holds for the VM, as far as this driver knows."""

    vm: Optional[int]
    fields: Dict[str, Any]
    ports: List[Port]
    primary: Dict[str, Optional[int]]


EMPTY = Held(None, {}, [], {"primary_ip4": None, "primary_ip6": None})


def _from_ledger(own: Dict[str, Any]) -> Optional[Held]:
    """The ledger's note, or None when it is missing or from before ports were kept."""
    vm = own.get("id") or own.get("vm")  # "vm" in the notes of earlier versions
    if not vm or not isinstance(own.get("ports"), list):
        return None
    return Held(int(vm), dict(own.get("fields") or {}),
                [Port(int(p["id"]), p["name"], p["mac"], p.get("port_id"),
                      {a: int(i) for a, i in p["addresses"].items()}) for p in own["ports"]],
                {"primary_ip4": own.get("primary_ip4"), "primary_ip6": own.get("primary_ip6")})


def _wanted(addresses: List[Address]) -> List[Tuple[str, Optional[str], Optional[str],
                                                     List[Address]]]:
    """(MAC, port id, network label, addresses) per port, in the event's order."""
    ports = {}  # type: Dict[str, Tuple[str, Optional[str], Optional[str], List[Address]]]
    for item in addresses:
        key = (item.mac or "").lower()
        if key not in ports:
            ports[key] = (key, item.port_id, item.network, [])
        ports[key][3].append(item)
    return list(ports.values())


def _vm_fields(event: InstanceEvent, cluster: int) -> Dict[str, Any]:
    flavor = event.flavor
    fields = {
        "name": event.hostname, "cluster": cluster, "status": status_of(event),
        "vcpus": flavor.vcpus if flavor else None,
        "memory": flavor.memory_mb if flavor else None,
        "disk": ((flavor.root_gb or 0) + (flavor.ephemeral_gb or 0)) * 1000 if flavor else None,
        "comments": "flavor %s, image %s, os %s" % (
            flavor.name if flavor else "?", event.image or "?", event.os_type or "?"),
        "custom_fields": {client.UUID_FIELD: event.uuid, client.PROJECT_FIELD: event.project_id},
    }  # type: Dict[str, Any]
    if event.addresses is None:
        # A pre-boot event may be handled after the build's: never let it turn an
        # active VM back into a planned one (a new VM still starts planned).
        fields["status_if_new"] = fields.pop("status")
    return fields


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
            # Only its id: a whole cluster record counts its VMs and sums their sizes in
            # joins that multiply (NetBox 4.7), which took minutes with 50,000 VMs in it
            # (bench/netbox_grown.py); ``fields`` leaves the counts out.
            cluster = client.get_or_create(
                self.api.virtualization.clusters, {"name": self.settings.cluster,
                                                   "fields": "id,name"},
                {"name": self.settings.cluster, "type": ctype.id, "status": "active"})
            self._cluster_id = int(cluster.id)
        return self._cluster_id

    def find(self, instance_uuid: str) -> Optional[Any]:
        found = client.owned_by(self.api.virtualization.virtual_machines, instance_uuid)
        return min(found, key=lambda vm: int(vm.id)) if found else None

    # -- reading what NetBox holds (only when the ledger cannot say) --------------------

    def _by_name(self, event: InstanceEvent, cluster: int) -> Optional[Any]:
        """The VM of this name in the cluster if it is this instance's; Conflict if another's.

        A clash as NetBox's own constraint counts it (the one a create runs into): the
        name in any case, among the cluster's VMs without a tenant (as ours are).
        """
        for other in self.api.virtualization.virtual_machines.filter(
                name__ie=event.hostname, cluster_id=cluster, tenant_id="null"):
            owner = (other.custom_fields or {}).get(client.UUID_FIELD)
            if owner != event.uuid:
                raise Conflict("a VM named %s already exists in cluster %s (id %s, "
                               "instance %s)" % (event.hostname, self.settings.cluster,
                                                 other.id, owner or "unmanaged"),
                               backend=BACKEND)
            return other
        return None

    def _read(self, event: InstanceEvent, cluster: int) -> Held:
        vm = self.find(event.uuid)
        if vm is None or vm.name != event.hostname:
            named = self._by_name(event, cluster)
            vm = vm or named
        if vm is None:
            return EMPTY
        assigned = {}  # type: Dict[int, Dict[str, int]]
        for ip in self.api.ipam.ip_addresses.filter(virtual_machine_id=vm.id):
            if ip.assigned_object_id is not None:
                assigned.setdefault(int(ip.assigned_object_id), {})[
                    client.host(ip.address)] = int(ip.id)
        ports = []
        for iface in sorted(self.api.virtualization.interfaces.filter(virtual_machine_id=vm.id),
                            key=lambda i: int(i.id)):
            mac = str(iface.primary_mac_address.mac_address).lower() \
                if iface.primary_mac_address else ""
            note = iface.description or ""
            ports.append(Port(int(iface.id), iface.name, mac,
                              note[len(PORT_NOTE):] if note.startswith(PORT_NOTE) else None,
                              assigned.get(int(iface.id), {})))
        return Held(int(vm.id), {"status": str(vm.status.value) if vm.status else None},
                    ports, {"primary_ip4": int(vm.primary_ip4.id) if vm.primary_ip4 else None,
                            "primary_ip6": int(vm.primary_ip6.id) if vm.primary_ip6 else None})

    def _ip_ids(self, instance_uuid: str, addresses: List[str],
                made: Dict[str, Any]) -> Dict[str, int]:
        """NetBox ids of the instance's IPAM records for these addresses.

        The IPAM step's ledger note has them when IPAM is this NetBox; otherwise one read.
        """
        ipam = made.get("ipam") or {}
        known = ipam.get("ids") or {} if ipam.get("netbox") == self.settings.url else {}
        ids = {a: int(known[a]) for a in addresses if a in known}
        missing = [a for a in addresses if a not in ids]
        if missing:
            for ip in client.owned_by(self.api.ipam.ip_addresses, instance_uuid,
                                      address=missing):
                ids.setdefault(client.host(ip.address), int(ip.id))
        return ids

    # -- writing the difference ------------------------------------------------------

    def register(self, event: InstanceEvent,
                 made: Optional[Dict[str, Any]] = None) -> InventoryRegistered:
        client.take_request_ids(self.api)  # what an earlier call left is not this one's
        result = self._register(event, made)
        result["netbox_request_ids"] = client.take_request_ids(self.api)
        return result

    def _register(self, event: InstanceEvent,
                  made: Optional[Dict[str, Any]]) -> InventoryRegistered:
        with client.translated(BACKEND, self.settings.url):
            cluster = self._cluster()
            fields = _vm_fields(event, cluster)
            held = None if made is None else _from_ledger(made.get("inventory") or {})
            if held is not None and held.fields.get("name") != event.hostname:
                self._by_name(event, cluster)  # a rename: the new name must be free
            if held is None and made is not None and not made.get("inventory"):
                # The ledger says this step made nothing yet: create without looking
                # first. NetBox itself refuses a second VM of the name in the cluster (a
                # database constraint, not a setting), and that refusal reads what is
                # there: ours, from a run whose note was lost, or another's (Conflict).
                held = EMPTY
            if held is not None:
                try:
                    return self._apply(event, fields, held, made or {},
                                       "created" if held.vm is None else "updated")
                except client.Stale:
                    pass  # the ledger is behind NetBox: read what it holds
            held = self._read(event, cluster)
            try:
                return self._apply(event, fields, held, {},
                                   "created" if held.vm is None else "updated")
            except client.Stale as exc:
                raise TransientError("VM %s changed in NetBox while it was written: %s"
                                     % (event.hostname, exc), backend=BACKEND) from exc

    def register_with(self, event: InstanceEvent,
                      made: Optional[Dict[str, Any]]) -> InventoryRegistered:
        return self.register(event, made)

    def deregister_with(self, event: InstanceEvent,
                        made: Optional[Dict[str, Any]]) -> InventoryDeregistered:
        return self.deregister(event, made)

    def _apply(self, event: InstanceEvent, fields: Dict[str, Any], held: Held,
               made: Dict[str, Any], action: str) -> InventoryRegistered:
        api = self.api
        with client.stale_if_refused():
            written = dict(held.fields)
            if held.vm is None:
                body = dict(fields)
                body["status"] = body.pop("status_if_new", body.get("status"))
                vm = int(api.virtualization.virtual_machines.create(**body).id)
                written = {k: v for k, v in body.items()}
                change = {}  # type: Dict[str, Any]
            else:
                vm = held.vm
                change = {k: v for k, v in fields.items()
                          if k != "status_if_new" and written.get(k) != v}
            ports, primary = list(held.ports), dict(held.primary)
            if event.addresses is not None:
                ports = self._sync_ports(vm, event, ports, made)
                primary = self._primaries(event.addresses, ports, primary)
                change.update({k: v for k, v in primary.items() if held.primary.get(k) != v})
            if change:
                api.virtualization.virtual_machines.update([dict(change, id=vm)])
                written.update({k: v for k, v in change.items() if k in fields})
        return {"id": vm, "action": action, "fields": written,
                "interfaces": sorted(p.name for p in ports),
                "ports": [p._asdict() for p in ports], "primary_ip4": primary.get("primary_ip4"),
                "primary_ip6": primary.get("primary_ip6")}

    def _sync_ports(self, vm: int, event: InstanceEvent, held: List[Port],
                    made: Dict[str, Any]) -> List[Port]:
        """Interfaces and their addresses equal the event's ports; only differences written."""
        api = self.api
        wanted = _wanted(event.addresses or [])
        kept = {}  # type: Dict[str, Port]
        for mac, port_id, _, _ in wanted:
            # By MAC; by port id only where the event has no MAC (Neutron changes a port's
            # MAC only while it is unbound: a new MAC on a VM is a new port).
            match = next((p for p in held if (p.mac == mac if mac else
                                              port_id and p.port_id == port_id)), None)
            if match is not None and match not in kept.values():
                kept[mac] = match
        gone = [p for p in held if p not in kept.values()]
        if gone:
            api.virtualization.interfaces.delete([p.id for p in gone])
        for mac, port_id, _, _ in wanted:
            port = kept.get(mac)
            if port is not None:
                kept[mac] = port._replace(port_id=port_id or port.port_id)
        names = {p.name for p in kept.values()}
        new = []  # type: List[Dict[str, Any]]
        for mac, port_id, network, _ in wanted:
            if mac in kept:
                continue
            base = network or "eth"
            name, n = base, 1
            while name in names:
                n += 1
                name = "%s-%d" % (base, n)
            names.add(name)
            body = {"virtual_machine": vm, "name": name}  # type: Dict[str, Any]
            if port_id:
                body["description"] = PORT_NOTE + port_id
            if mac:
                body["mac_address"] = mac
            new.append(body)
        if new:
            for body, made_iface in zip(new, api.virtualization.interfaces.create(new)):
                kept[body.get("mac_address", "")] = Port(
                    int(made_iface.id), body["name"], body.get("mac_address", ""),
                    next(p for m, p, _, _ in wanted if m == body.get("mac_address", "")), {})
        addresses = [a.address for a in event.addresses or []]
        ids = self._ip_ids(event.uuid, [a for a in addresses if not any(
            a in p.addresses for p in kept.values())], made)
        assign = []  # type: List[Dict[str, Any]]
        result = []
        for mac, _, _, items in wanted:
            port = kept[mac]
            have = {}
            for item in items:
                ip = port.addresses.get(item.address) or ids.get(item.address)
                if ip is None:
                    continue  # IPAM is elsewhere: NetBox has no record of this address
                have[item.address] = ip
                if item.address not in port.addresses:
                    assign.append({"id": ip, "assigned_object_type": IFACE_TYPE,
                                   "assigned_object_id": port.id})
            result.append(port._replace(addresses=have))
        if assign:
            api.ipam.ip_addresses.update(assign)
        return sorted(result, key=lambda p: p.id)

    @staticmethod
    def _primaries(addresses: List[Address], ports: List[Port],
                   primary: Dict[str, Optional[int]]) -> Dict[str, Optional[int]]:
        """Keep each primary IP while its address is on the VM; else the oldest port's first."""
        chosen = {}  # type: Dict[str, Optional[int]]
        version = {a.address: a.version for a in addresses}
        for v in (4, 6):
            key = "primary_ip%d" % v
            ids = [ip for p in ports for a, ip in p.addresses.items() if version.get(a) == v]
            chosen[key] = primary.get(key) if primary.get(key) in ids else \
                (ids[0] if ids else None)
        return chosen

    def deregister(self, event: InstanceEvent,
                   made: Optional[Dict[str, Any]] = None) -> InventoryDeregistered:
        with client.translated(BACKEND, self.settings.url):
            held = _from_ledger((made or {}).get("inventory") or {})
            if held is not None:
                try:
                    with client.stale_if_refused():
                        return self._remove(held)
                except client.Stale:
                    pass
            vm = self.find(event.uuid)
            if vm is None:
                return {"id": None}
            ips = {a: int(ip.id) for a, ip in (
                (client.host(ip.address), ip)
                for ip in self.api.ipam.ip_addresses.filter(virtual_machine_id=vm.id))}
            return self._remove(Held(int(vm.id), {}, [Port(0, "", "", None, ips)], {}))

    def _remove(self, held: Held) -> InventoryDeregistered:
        assert held.vm is not None
        api = self.api.virtualization.virtual_machines
        if self.settings.on_delete == "delete":
            api.delete([held.vm])  # its interfaces, their MACs and addresses go with it
            return {"id": held.vm, "action": "deleted"}
        # NetBox refuses to unassign an address that is still a primary IP.
        api.update([{"id": held.vm, "status": "decommissioning", "primary_ip4": None,
                     "primary_ip6": None}])
        ips = sorted({ip for p in held.ports for ip in p.addresses.values()})
        if ips:
            self.api.ipam.ip_addresses.update([{"id": ip, "assigned_object_type": None,
                                                "assigned_object_id": None} for ip in ips])
        return {"id": held.vm, "action": "decommissioned"}

    def describe(self, instance_uuid: str) -> InventoryHeld:
        with client.translated(BACKEND, self.settings.url):
            self._cluster()
            vm = self.find(instance_uuid)
            if vm is None:
                return {}
            try:
                interfaces = list(self.api.virtualization.interfaces.filter(
                    virtual_machine_id=vm.id))
            except pynetbox.RequestError:
                if self.find(instance_uuid) is None:
                    return {}  # deleted between the two reads
                raise
            return {"id": int(vm.id), "name": vm.name, "status": str(vm.status.value),
                    "vcpus": vm.vcpus, "memory": vm.memory, "disk": vm.disk,
                    "interfaces": sorted(i.name for i in interfaces),
                    "macs": sorted(str(i.primary_mac_address.mac_address).lower()
                                   for i in interfaces if i.primary_mac_address),
                    "primary_ip4": str(vm.primary_ip4) if vm.primary_ip4 else None,
                    "primary_ip6": str(vm.primary_ip6) if vm.primary_ip6 else None}

    def check(self) -> str:
        return client.check(self.api, BACKEND, self.settings.url)

    def managed(self) -> Dict[str, Dict[str, Any]]:
        """Per instance: name, status, flavor, interfaces (MAC -> addresses), primary IPs.

        Three listings (paged) for the whole cluster, whatever its size.
        """
        with client.translated(BACKEND, self.settings.url):
            cluster = self._cluster()
            vms = {int(vm.id): vm for vm in client.managed(
                self.api.virtualization.virtual_machines, cluster_id=cluster)}
            macs = {}  # type: Dict[int, Tuple[int, str]]
            ports = {}  # type: Dict[int, Dict[str, List[str]]]
            for iface in self.api.virtualization.interfaces.filter(cluster_id=cluster):
                mac = str(iface.primary_mac_address.mac_address).lower() \
                    if iface.primary_mac_address else ""
                owner = int(iface.virtual_machine.id)
                macs[int(iface.id)] = (owner, mac)
                ports.setdefault(owner, {}).setdefault(mac, [])
            for ip in client.managed(self.api.ipam.ip_addresses):
                if ip.assigned_object_type == IFACE_TYPE and \
                        ip.assigned_object_id is not None and int(ip.assigned_object_id) in macs:
                    owner, mac = macs[int(ip.assigned_object_id)]
                    ports[owner][mac].append(client.host(ip.address))
            held = {}
            for vm_id, vm in vms.items():
                held[vm.custom_fields[client.UUID_FIELD]] = {
                    "name": vm.name, "status": str(vm.status.value), "vcpus": vm.vcpus,
                    "memory": vm.memory, "disk": vm.disk,
                    "interfaces": {m: sorted(a) for m, a in ports.get(vm_id, {}).items()},
                    "primary_ip4": client.host(vm.primary_ip4.address)
                    if vm.primary_ip4 else None,
                    "primary_ip6": client.host(vm.primary_ip6.address)
                    if vm.primary_ip6 else None}
            return held
