"""IPAM in memory: one record per address, owned by an instance or by nobody (a person's).

The rules are NetBox's and Infoblox's: an address must lie in a prefix the
backend knows (``IpamStore.prefixes``; None, the default, knows every
address), an address another owner holds is a conflict, and every address is
checked before the first write.
"""

import ipaddress
from typing import Any, Dict, List, Optional, Sequence

from novahooks.event import Address
from tasks.backends.ipam.base import IpamDriver, IpamEnsured, IpamHeld, IpamReleased
from tasks.backends.memory import Backend, MemoryDriver
from tasks.errors import Conflict, OutOfScope


class IpamStore(Backend):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.prefixes: Optional[List[Any]] = None
        #: address -> {"owner": instance UUID or None, "dns_name": str}
        self.addresses: Dict[str, Dict[str, Any]] = {}

    def in_scope(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return self.prefixes is None or any(ip in ipaddress.ip_network(p)
                                            for p in self.prefixes)

    def held_by(self, instance_uuid: str) -> List[str]:
        return sorted(a for a, r in self.addresses.items() if r["owner"] == instance_uuid)


def _plain(address: str) -> str:
    return str(ipaddress.ip_address(address))


class MemoryIpam(IpamDriver, MemoryDriver):
    BACKEND = IpamStore
    SECRET = "token"
    KIND = "ipam"

    def prefix_of(self, address: str) -> Optional[Any]:
        """The most specific prefix holding the address (tasks/preflight.py refuses its
        network and broadcast addresses), None when the backend knows no prefixes."""
        with self.session() as store:
            ip = ipaddress.ip_address(address)
            holding = [n for n in map(ipaddress.ip_network, store.prefixes or []) if ip in n]
        return max(holding, key=lambda n: n.prefixlen) if holding else None

    def _refuse(self, store: IpamStore, instance_uuid: str, wanted: Sequence[str]) -> None:
        for address in wanted:
            if not store.in_scope(address):
                raise OutOfScope("address %s is in no prefix of %s" % (address, self.name),
                                 backend=self.KIND)
            holder = store.addresses.get(address, {"owner": instance_uuid})["owner"]
            if holder != instance_uuid:
                raise Conflict("address %s is already recorded for %s" % (
                    address, "instance %s" % holder if holder else
                    "something not managed by novahooks"), backend=self.KIND)

    def preflight(self, instance_uuid: str, fqdn: str, addresses: Sequence[Address]) -> None:
        with self.session() as store:
            self._refuse(store, instance_uuid, sorted({_plain(a.address) for a in addresses}))

    def ensure(self, instance_uuid: str, fqdn: str,
               addresses: Sequence[Address]) -> IpamEnsured:
        wanted = sorted({_plain(a.address) for a in addresses})
        with self.session() as store:
            self._refuse(store, instance_uuid, wanted)
            held = store.held_by(instance_uuid)
            released = sorted(set(held) - set(wanted))
            for address in released:
                del store.addresses[address]
            updated = [a for a in wanted if a in held and store.addresses[a]["dns_name"] != fqdn]
            for address in wanted:
                store.addresses[address] = {"owner": instance_uuid, "dns_name": fqdn}
        return {"created": [a for a in wanted if a not in held], "updated": updated,
                "released": released}

    def release(self, instance_uuid: str) -> IpamReleased:
        with self.session() as store:
            released = store.held_by(instance_uuid)
            for address in released:
                del store.addresses[address]
        return {"released": released}

    def describe(self, instance_uuid: str) -> IpamHeld:
        with self.session() as store:
            return {"addresses": store.held_by(instance_uuid)}

    def managed(self) -> Dict[str, Dict[str, Any]]:
        held: Dict[str, Dict[str, Any]] = {}
        with self.session() as store:
            for address, record in sorted(store.addresses.items()):
                if record["owner"]:
                    entry = held.setdefault(record["owner"], {"addresses": [],
                                                              "dns_name": record["dns_name"]})
                    entry["addresses"].append(address)
        return held
