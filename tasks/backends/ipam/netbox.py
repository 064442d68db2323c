"""NetBox as IPAM: one IPAddress per fixed address, in the prefix that contains it."""

import ipaddress
from typing import Any, Dict, List, Sequence, Tuple

from novahooks.event import Address
from tasks.backends.ipam.base import IpamDriver
from tasks.backends.netbox import client
from tasks.errors import Conflict, OutOfScope

BACKEND = "ipam"


class NetBoxIpam(IpamDriver):
    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.api = client.connect(settings, BACKEND)
        self._fields_ready = False

    def _ready(self) -> None:
        if not self._fields_ready:
            client.ensure_custom_fields(self.api)
            self._fields_ready = True

    def _cidr(self, address: str) -> str:
        prefixes = list(self.api.ipam.prefixes.filter(contains=address))
        if not prefixes:
            raise OutOfScope("address %s is in no prefix known to NetBox" % address,
                             backend=BACKEND)
        longest = max(prefixes, key=lambda p: ipaddress.ip_network(str(p.prefix)).prefixlen)
        return "%s/%d" % (address, ipaddress.ip_network(str(longest.prefix)).prefixlen)

    def mine(self, instance_uuid: str) -> Dict[str, Any]:
        return {str(ip.address).split("/")[0]: ip
                for ip in client.owned_by(self.api.ipam.ip_addresses, instance_uuid)}

    def ensure(self, instance_uuid: str, fqdn: str,
               addresses: Sequence[Address]) -> Dict[str, Any]:
        with client.translated(BACKEND, self.settings.url):
            self._ready()
            mine = self.mine(instance_uuid)
            plan: List[Tuple[str, str]] = []
            for item in addresses:
                cidr = self._cidr(item.address)
                if item.address not in mine:
                    for other in self.api.ipam.ip_addresses.filter(address=item.address):
                        owner = (other.custom_fields or {}).get(client.UUID_FIELD)
                        if owner == instance_uuid:
                            mine[item.address] = other
                            continue
                        raise Conflict("address %s is already recorded in NetBox (id %s) for %s"
                                       % (item.address, other.id,
                                          "instance %s" % owner if owner else
                                          "something not managed by novahooks"),
                                       backend=BACKEND)
                plan.append((item.address, cidr))
            created, updated = [], []
            for address, cidr in plan:
                record = mine.pop(address, None)
                fields = {"address": cidr, "status": "active", "dns_name": fqdn,
                          "description": "Nova instance %s" % instance_uuid,
                          "custom_fields": {client.UUID_FIELD: instance_uuid}}
                if record is None:
                    with client.raced(BACKEND, "address %s" % address):
                        self.api.ipam.ip_addresses.create(**fields)
                    created.append(address)
                elif str(record.address) != cidr or record.dns_name != fqdn:
                    record.update({"address": cidr, "dns_name": fqdn})
                    updated.append(address)
            released = sorted(mine)
            for record in mine.values():
                record.delete()
        return {"created": created, "updated": updated, "released": released}

    def release(self, instance_uuid: str) -> Dict[str, Any]:
        with client.translated(BACKEND, self.settings.url):
            self._ready()
            mine = self.mine(instance_uuid)
            for record in mine.values():
                record.delete()
        return {"released": sorted(mine)}

    def describe(self, instance_uuid: str) -> Dict[str, Any]:
        with client.translated(BACKEND, self.settings.url):
            self._ready()
            mine = self.mine(instance_uuid)
            return {"addresses": sorted(str(ip.address) for ip in mine.values())}

    def check(self) -> str:
        return client.check(self.api, BACKEND, self.settings.url)

    def managed(self) -> Dict[str, Dict[str, Any]]:
        held: Dict[str, Dict[str, Any]] = {}
        with client.translated(BACKEND, self.settings.url):
            self._ready()
            for ip in client.managed(self.api.ipam.ip_addresses):
                uuid = ip.custom_fields[client.UUID_FIELD]
                entry = held.setdefault(uuid, {"addresses": [], "dns_name": ip.dns_name})
                entry["addresses"].append(str(ip.address).split("/")[0])
        return held
