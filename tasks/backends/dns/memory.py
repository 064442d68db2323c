"""DNS in memory: names with their A/AAAA and owner, addresses with their PTR targets.

The rules are the RFC 2136 driver's: the name must lie in ``[dns] zone`` and
every address in a reverse zone (a ``[naming prefix]`` rule's first, then
``[dns] reverse_zones``), checked before the first write; the backend must
serve those zones (``DnsStore.zones``; None, the default, serves every zone);
a name holding records another instance or a person made is a conflict, and so
is an address whose PTR points at another name; a delete takes back only what
this instance owns, and ``preflight`` makes every refusal of ``register``
without writing.
"""

from typing import Any, Dict, List, Optional, Sequence, Set

import dns.name

from novahooks.event import Address
from tasks.backends.dns.base import DnsDeregistered, DnsDriver, DnsHeld, DnsRegistered
from tasks.backends.dns.scope import Scope
from tasks.backends.memory import Backend, MemoryDriver
from tasks.errors import Conflict, OutOfScope


class DnsStore(Backend):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        #: Zones served (lower case, no final dot); None serves every zone.
        self.zones: Optional[Set[str]] = None
        #: name -> {"owner": instance UUID or None (a person's), "A": set, "AAAA": set}
        self.names: Dict[str, Dict[str, Any]] = {}
        #: address -> the names its PTR records point at
        self.ptrs: Dict[str, Set[str]] = {}

    def serves(self, zone: dns.name.Name) -> bool:
        return self.zones is None or zone.to_text(omit_final_dot=True).lower() in self.zones


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


class MemoryDns(DnsDriver, MemoryDriver):
    BACKEND = DnsStore
    SECRET = "tsig_secret"
    KIND = "dns"

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.scope = Scope(settings, self.KIND)
        self.zone, self.reverse_zones = self.scope.zone, self.scope.reverse_zones

    def _name(self, fqdn: str) -> str:
        return _text(self.scope.name(fqdn))

    def _reverse_zone(self, address: str) -> dns.name.Name:
        return self.scope.reverse_zone(address, self.reverse_prefixes)

    def _served(self, store: DnsStore, zones: Sequence[dns.name.Name]) -> None:
        for zone in zones:
            if not store.serves(zone):
                raise OutOfScope("%s does not serve zone %s (NOTZONE)" % (self.name, zone),
                                 backend=self.KIND)

    def _owner(self, store: DnsStore, name: str, instance_uuid: str) -> Optional[bool]:
        """True: ours; False: someone else's; None: nothing there."""
        held = store.names.get(name)
        if held is None:
            return None
        return held["owner"] == instance_uuid

    def _unpoint(self, store: DnsStore, address: str, name: str) -> bool:
        """Take the name off the address's PTRs; whether it was there."""
        targets = store.ptrs.get(address, set())
        pointed = name in targets
        targets.discard(name)
        if not targets:
            store.ptrs.pop(address, None)
        return pointed

    def _plan(self, store: DnsStore, fqdn: str, instance_uuid: str,
              addresses: Sequence[Address]) -> Optional[bool]:
        """Every refusal register would make, before it writes: whether the name is ours."""
        name = self._name(fqdn)
        self._served(store, [self.zone] + [self._reverse_zone(a.address) for a in addresses])
        owned = self._owner(store, name, instance_uuid)
        if owned is False:
            raise Conflict("%s already holds records not owned by instance %s"
                           % (fqdn, instance_uuid), backend=self.KIND)
        for item in addresses:
            others = sorted(store.ptrs.get(item.address, set()) - {name})
            if others:
                raise Conflict("the reverse name of %s points at %s, not at %s" % (
                    item.address, ", ".join(others), fqdn), backend=self.KIND)
        return owned

    def preflight(self, fqdn: str, instance_uuid: str, addresses: Sequence[Address]) -> None:
        super().preflight(fqdn, instance_uuid, addresses)
        with self.session() as store:
            self._plan(store, fqdn, instance_uuid, addresses)

    def register(self, fqdn: str, instance_uuid: str,
                 addresses: Sequence[Address]) -> DnsRegistered:
        wanted = {a.address: a.version for a in addresses}
        with self.session() as store:
            owned = self._plan(store, fqdn, instance_uuid, addresses)
            name = self._name(fqdn)
            old = set(store.names[name]["A"] | store.names[name]["AAAA"]) if owned else set()
            store.names[name] = {"owner": instance_uuid,
                                 "A": {a for a, v in wanted.items() if v == 4},
                                 "AAAA": {a for a, v in wanted.items() if v == 6}}
            for address in wanted:
                store.ptrs[address] = {name}
            for stale in old - set(wanted):
                self._unpoint(store, stale, name)
        return {"fqdn": fqdn, "addresses": sorted(wanted), "removed": sorted(old - set(wanted))}

    def deregister(self, fqdn: str, instance_uuid: str,
                   addresses: Sequence[Address]) -> DnsDeregistered:
        name = self._name(fqdn)
        with self.session() as store:
            owned = self._owner(store, name, instance_uuid)
            if owned is False:
                return {"fqdn": fqdn, "forward_removed": False, "ptr_checked": [],
                        "ptr_removed": []}
            known = {a.address for a in addresses}
            if owned:
                held = store.names.pop(name)
                known.update(held["A"] | held["AAAA"])
            removed = [address for address in sorted(known)
                       if self._unpoint(store, address, name)]
        return {"fqdn": fqdn, "forward_removed": bool(owned), "ptr_checked": sorted(known),
                "ptr_removed": removed}

    def describe(self, fqdn: str, instance_uuid: str,
                 addresses: Sequence[str]) -> DnsHeld:
        name = self._name(fqdn)
        with self.session() as store:
            held = store.names.get(name, {"owner": None, "A": set(), "AAAA": set()})
            ptrs: Dict[str, List[str]] = {a: sorted(store.ptrs.get(a, ())) for a in addresses}
            return {"A": sorted(held["A"]), "AAAA": sorted(held["AAAA"]),
                    "owned": held["owner"] == instance_uuid, "PTR": ptrs}

    def check(self) -> str:
        by_prefix = [dns.name.from_text(z) for _, z in self.reverse_prefixes]
        zones = [self.zone] + list(dict.fromkeys(self.reverse_zones + by_prefix))
        with self.session() as store:
            self._served(store, zones)
        return "%s serves %s and %d reverse zone(s), credentials accepted" % (
            self.name, self.zone, len(zones) - 1)
