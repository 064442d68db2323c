"""The directory contract: one host entry per instance, found again by its UUID."""

import abc
from typing import Any, Dict, List, NotRequired, Optional, TypedDict

from novahooks.event import InstanceEvent
from tasks.backends.base import Driver
from tasks.errors import InvalidEvent


class EntryIdentity(TypedDict, total=False):
    """The server's own identity of an entry (RFC 4530 ``entryUUID``) and change stamp,
    which it keeps however the entry is renamed: the audit record names the entry by it."""

    entry_uuid: str
    modify_timestamp: str


class DirectoryRegistered(EntryIdentity):
    """The instance's entry after ``register``."""

    #: None only when the driver leaves this VM out (``skipped`` says why).
    dn: Optional[str]
    #: added, updated or skipped.
    action: str
    skipped: NotRequired[str]
    #: Active Directory: the computer account, and whether the VM is Windows.
    sAMAccountName: NotRequired[str]
    windows: NotRequired[bool]


class DirectoryDeregistered(TypedDict):
    #: The DNs of every entry of the instance that was removed.
    removed: List[str]


class DirectoryHeld(TypedDict):
    #: The DNs of the instance's entries.
    entries: List[str]


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
    def register(self, event: InstanceEvent) -> DirectoryRegistered:
        """Create or update the entry so it matches the event."""

    @abc.abstractmethod
    def deregister(self, event: InstanceEvent) -> DirectoryDeregistered:
        """Remove every entry that belongs to the event's instance."""

    @abc.abstractmethod
    def describe(self, instance_uuid: str) -> DirectoryHeld:
        """The entries that belong to the instance."""

    @abc.abstractmethod
    def managed(self) -> Dict[str, Dict[str, Any]]:
        """Reconcile compares these with Nova (see Driver.managed)."""
