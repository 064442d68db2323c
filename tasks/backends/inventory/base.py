"""The inventory contract: one VM record per instance, found by its UUID."""

import abc
from typing import Any, Dict, Optional

from novahooks.event import InstanceEvent
from tasks.backends.base import Driver

#: Nova vm_state -> the lifecycle word inventories use.
STATUS = {"building": "planned", "active": "active", "stopped": "offline",
          "paused": "offline", "suspended": "offline", "shelved": "offline",
          "shelved_offloaded": "offline", "resized": "active", "rescued": "active",
          "error": "failed"}


def status_of(event: InstanceEvent) -> str:
    return STATUS.get(event.vm_state or "building", "active")


class InventoryDriver(Driver):
    @abc.abstractmethod
    def register(self, event: InstanceEvent) -> Dict[str, Any]:
        """Create or update the VM record so it matches the event."""

    @abc.abstractmethod
    def deregister(self, event: InstanceEvent) -> Dict[str, Any]:
        """Remove (or decommission, by configuration) the instance's record."""

    def register_with(self, event: InstanceEvent,
                      made: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """:meth:`register`, given the ledger's notes for the instance (step -> note).

        A driver that notes its backend's ids there writes by id instead of searching
        again (and may use another step's note: the IPAM step's address ids); the
        notes may be behind the backend, so they are hints, never the truth.
        """
        return self.register(event)

    def deregister_with(self, event: InstanceEvent,
                        made: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """:meth:`deregister`, given the ledger's notes (see :meth:`register_with`)."""
        return self.deregister(event)

    @abc.abstractmethod
    def describe(self, instance_uuid: str) -> Dict[str, Any]:
        """The instance's record, or an empty dict."""

    @abc.abstractmethod
    def managed(self) -> Dict[str, Dict[str, Any]]:
        """Reconcile compares these with Nova (see Driver.managed)."""
