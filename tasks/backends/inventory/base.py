"""The inventory contract: one VM record per instance, found by its UUID."""

import abc
from typing import Any, Dict, List, NotRequired, Optional, TypedDict, Union

from novahooks.event import InstanceEvent
from tasks.backends.base import Driver

#: Nova vm_state -> the lifecycle word inventories use.
STATUS = {"building": "planned", "active": "active", "stopped": "offline",
          "paused": "offline", "suspended": "offline", "shelved": "offline",
          "shelved_offloaded": "offline", "resized": "active", "rescued": "active",
          "error": "failed"}


def status_of(event: InstanceEvent) -> str:
    return STATUS.get(event.vm_state or "building", "active")


class InventoryRegistered(TypedDict):
    """The instance's record after ``register``; the ledger keeps it as the step's note."""

    #: The record's id in the inventory (None: a CMDB that answered a create without it).
    id: Optional[Union[int, str]]
    #: created, updated or unchanged.
    action: str
    #: NetBox's note for ``register_with``: the fields written, the interfaces and their
    #: ports as made, the primary addresses, and the X-Request-ID of each write.
    fields: NotRequired[Dict[str, Any]]
    interfaces: NotRequired[List[str]]
    ports: NotRequired[List[Dict[str, Any]]]
    primary_ip4: NotRequired[Optional[int]]
    primary_ip6: NotRequired[Optional[int]]
    netbox_request_ids: NotRequired[List[str]]


class InventoryDeregistered(TypedDict):
    #: The record's id; None when the instance had none (absent is success).
    id: Optional[Union[int, str]]
    #: deleted or decommissioned; absent when there was no record.
    action: NotRequired[str]
    netbox_request_ids: NotRequired[List[str]]


class InventoryHeld(TypedDict, total=False):
    """The instance's record as the inventory holds it; empty when it holds none."""

    id: Union[int, str]
    name: Optional[str]
    status: Optional[str]
    #: NetBox: what else its VM record says (vcpus is a decimal there).
    vcpus: Optional[float]
    memory: Optional[int]
    disk: Optional[int]
    interfaces: List[str]
    macs: List[str]
    primary_ip4: Optional[str]
    primary_ip6: Optional[str]


class InventoryDriver(Driver):
    @abc.abstractmethod
    def register(self, event: InstanceEvent) -> InventoryRegistered:
        """Create or update the VM record so it matches the event."""

    @abc.abstractmethod
    def deregister(self, event: InstanceEvent) -> InventoryDeregistered:
        """Remove (or decommission, by configuration) the instance's record."""

    def register_with(self, event: InstanceEvent,
                      made: Optional[Dict[str, Any]]) -> InventoryRegistered:
        """:meth:`register`, given the ledger's notes for the instance (step -> note).

        A driver that notes its backend's ids there writes by id instead of searching
        again (and may use another step's note: the IPAM step's address ids); the
        notes may be behind the backend, so they are hints, never the truth.
        """
        return self.register(event)

    def deregister_with(self, event: InstanceEvent,
                        made: Optional[Dict[str, Any]]) -> InventoryDeregistered:
        """:meth:`deregister`, given the ledger's notes (see :meth:`register_with`)."""
        return self.deregister(event)

    @abc.abstractmethod
    def describe(self, instance_uuid: str) -> InventoryHeld:
        """The instance's record, or an empty dict."""

    @abc.abstractmethod
    def managed(self) -> Dict[str, Dict[str, Any]]:
        """Reconcile compares these with Nova (see Driver.managed)."""
