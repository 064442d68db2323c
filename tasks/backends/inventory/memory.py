"""An inventory in memory: VM records with ids, found by the instance UUID they carry.

The rules are NetBox's and the REST driver's: one record per instance (the
oldest, should two exist), a name another instance's record holds is a
conflict (NetBox's per-cluster uniqueness), a pre-boot event never turns an
active VM back into a planned one, a delete of nothing is success, and
``[inventory] on_delete = decommission`` keeps the record, marked.
"""

import itertools
from typing import Any, Dict, Optional

from novahooks.event import InstanceEvent
from tasks.backends.inventory.base import (InventoryDeregistered, InventoryDriver, InventoryHeld,
                                           InventoryRegistered, status_of)
from tasks.backends.memory import Backend, MemoryDriver
from tasks.errors import Conflict

DECOMMISSIONED = "decommissioned"


class InventoryStore(Backend):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        #: id -> {"id", "uuid" (None: a person's), "name", "status", "vcpus", "memory", ...}
        self.records: Dict[int, Dict[str, Any]] = {}
        self.ids = itertools.count(1)

    def find(self, instance_uuid: str) -> Optional[Dict[str, Any]]:
        mine = [r for r in self.records.values() if r["uuid"] == instance_uuid]
        return min(mine, key=lambda r: int(r["id"])) if mine else None


class MemoryInventory(InventoryDriver, MemoryDriver):
    BACKEND = InventoryStore
    SECRET = "token"
    KIND = "inventory"

    def register(self, event: InstanceEvent) -> InventoryRegistered:
        flavor = event.flavor
        fields: Dict[str, Any] = {"uuid": event.uuid, "name": event.hostname,
                                  "status": status_of(event), "project": event.project_id,
                                  "vcpus": flavor.vcpus if flavor else None,
                                  "memory": flavor.memory_mb if flavor else None}
        if event.addresses is not None:
            fields["addresses"] = sorted(a.address for a in event.addresses)
        with self.session() as store:
            record = store.find(event.uuid)
            for other in store.records.values():
                if other["name"] == event.hostname and other["uuid"] != event.uuid:
                    raise Conflict("a VM named %s already exists (id %s, instance %s)" % (
                        event.hostname, other["id"], other["uuid"] or "unmanaged"),
                        backend=self.KIND)
            if record is None:
                ident = next(store.ids)
                store.records[ident] = dict(fields, id=ident)
                return {"id": ident, "action": "created"}
            if event.addresses is None:
                del fields["status"]  # a late pre-boot event must not make it planned
            if all(record.get(k) == v for k, v in fields.items()):
                return {"id": record["id"], "action": "unchanged"}
            record.update(fields)
            return {"id": record["id"], "action": "updated"}

    def deregister(self, event: InstanceEvent) -> InventoryDeregistered:
        with self.session() as store:
            record = store.find(event.uuid)
            if record is None:
                return {"id": None}
            if self.settings.on_delete == "delete":
                del store.records[record["id"]]
                return {"id": record["id"], "action": "deleted"}
            record["status"] = DECOMMISSIONED
            return {"id": record["id"], "action": "decommissioned"}

    def describe(self, instance_uuid: str) -> InventoryHeld:
        with self.session() as store:
            record = store.find(instance_uuid)
            if record is None:
                return {}
            return {"id": record["id"], "name": record["name"], "status": record["status"]}

    def managed(self) -> Dict[str, Dict[str, Any]]:
        with self.session() as store:
            return {r["uuid"]: {"name": r["name"], "status": r["status"]}
                    for r in sorted(store.records.values(), key=lambda r: -int(r["id"]))
                    if r["uuid"]}
