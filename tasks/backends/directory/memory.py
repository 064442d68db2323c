"""A directory in memory: one entry per host name, owned by the instance UUIDs it lists.

The rules are the LDAP driver's: the entry is found again by its owner's UUID
(a rename moves it), a name whose entry lists other owners, or none (a
person's), is a conflict (``preflight`` finds it without writing), addresses
and MACs are kept when an event does not know them yet (pre-boot), and a
delete removes only the instance's own entries.
"""

from typing import Any, Dict, List, Optional

from novahooks.event import InstanceEvent
from tasks.backends.directory.base import (DirectoryDeregistered, DirectoryDriver, DirectoryHeld,
                                           DirectoryRegistered)
from tasks.backends.memory import Backend, MemoryDriver
from tasks.errors import Conflict, InvalidEvent


class DirectoryStore(Backend):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        #: host name (lower case) -> {"name", "owners": [UUID], "addresses": [], "macs": []}
        self.entries: Dict[str, Dict[str, Any]] = {}

    def owned_by(self, instance_uuid: str) -> List[str]:
        return sorted(key for key, entry in self.entries.items()
                      if instance_uuid in entry["owners"])


class MemoryDirectory(DirectoryDriver, MemoryDriver):
    BACKEND = DirectoryStore
    SECRET = "password"
    KIND = "directory"

    def dn_for(self, key: str) -> str:
        return "cn=%s,%s" % (key, self.settings.base_dn or "dc=memory")

    def register(self, event: InstanceEvent) -> DirectoryRegistered:
        if not event.hostname:
            raise InvalidEvent("hostname", "missing; a directory entry needs a name")
        key = event.hostname.lower()
        with self.session() as store:
            current = self._claim(store, event)
            for stale in store.owned_by(event.uuid):
                if stale != key:
                    del store.entries[stale]
            entry = current or {"name": event.hostname, "owners": [event.uuid],
                                "addresses": [], "macs": []}
            if event.addresses is not None:
                entry["addresses"] = sorted({a.address for a in event.addresses})
                entry["macs"] = sorted({a.mac for a in event.addresses if a.mac})
            store.entries[key] = entry
        return {"dn": self.dn_for(key), "action": "updated" if current else "added"}

    def _claim(self, store: DirectoryStore, event: InstanceEvent) -> Optional[Dict[str, Any]]:
        """The entry at the event's name if it is the instance's own (None: no entry);
        Conflict if it lists other owners or none (a person's)."""
        current = store.entries.get(str(event.hostname).lower())
        if current is not None and event.uuid not in current["owners"]:
            raise Conflict("%s exists and belongs to %s, not instance %s" % (
                self.dn_for(str(event.hostname).lower()),
                ", ".join(current["owners"]) or "no instance", event.uuid), backend=self.KIND)
        return current

    def preflight(self, event: InstanceEvent) -> None:
        super().preflight(event)
        with self.session() as store:
            self._claim(store, event)

    def deregister(self, event: InstanceEvent) -> DirectoryDeregistered:
        with self.session() as store:
            removed = store.owned_by(event.uuid)
            for key in removed:
                del store.entries[key]
        return {"removed": [self.dn_for(key) for key in removed]}

    def describe(self, instance_uuid: str) -> DirectoryHeld:
        with self.session() as store:
            return {"entries": [self.dn_for(key) for key in store.owned_by(instance_uuid)]}

    def managed(self) -> Dict[str, Dict[str, Any]]:
        held: Dict[str, Dict[str, Any]] = {}
        with self.session() as store:
            for key, entry in store.entries.items():
                for owner in entry["owners"]:
                    held[owner] = {"dn": self.dn_for(key), "hostname": entry["name"],
                                   "addresses": list(entry["addresses"])}
        return held
