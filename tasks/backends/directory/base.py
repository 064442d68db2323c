"""The directory contract: one host entry per instance, found again by its UUID."""

import abc
from typing import Any, Dict

from novahooks.event import InstanceEvent
from tasks.backends.base import Driver
from tasks.errors import InvalidEvent


class DirectoryDriver(Driver):
    @classmethod
    def precheck(cls, settings: Any, event: InstanceEvent) -> None:
        """Raise InvalidEvent if this backend would refuse the event.

        A class method, needing neither a connection nor credentials, so that every
        step's worker can run it: a chain then refuses a name the directory cannot
        hold (an AD computer name over 15 characters) before an earlier step writes.
        """
        reserved = {name.strip().lower() for name in getattr(settings, "reserved_names", ())}
        name = (event.hostname or "").lower()
        if name in reserved or name.rstrip("$") in reserved:
            raise InvalidEvent("hostname", "%r is a reserved name ([directory] "
                               "reserved_names)" % event.hostname)

    def preflight(self, event: InstanceEvent) -> None:
        """What :meth:`register` would refuse, asking the server but changing nothing.

        The chain's first writing step runs it (tasks/preflight.py); a driver whose
        refusals depend on what the directory holds (AD's account names) reads them.
        """
        self.precheck(self.settings, event)

    @abc.abstractmethod
    def register(self, event: InstanceEvent) -> Dict[str, Any]:
        """Create or update the entry so it matches the event."""

    @abc.abstractmethod
    def deregister(self, event: InstanceEvent) -> Dict[str, Any]:
        """Remove every entry that belongs to the event's instance."""

    @abc.abstractmethod
    def describe(self, instance_uuid: str) -> Dict[str, Any]:
        """The entries that belong to the instance."""

    @abc.abstractmethod
    def managed(self) -> Dict[str, Dict[str, Any]]:
        """Reconcile compares these with Nova (see Driver.managed)."""
