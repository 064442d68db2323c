"""The IPAM contract: the records for an instance equal its addresses, keyed by its UUID."""

import abc
from typing import Any, Dict, Optional, Sequence

from novahooks.event import Address
from tasks.backends.base import Driver


class IpamDriver(Driver):
    @abc.abstractmethod
    def ensure(self, instance_uuid: str, fqdn: str,
               addresses: Sequence[Address]) -> Dict[str, Any]:
        """Record exactly these addresses for the instance; release any others it held.

        Every address is checked (in a known prefix, not held by another
        instance) before the first write, so a bad one leaves nothing behind.
        """

    @abc.abstractmethod
    def release(self, instance_uuid: str) -> Dict[str, Any]:
        """Release every address the instance holds; none is success."""

    def ensure_with(self, instance_uuid: str, fqdn: str, addresses: Sequence[Address],
                    known: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """:meth:`ensure`, given what the last run returned: the ledger's note, ``{}`` when
        the ledger has none, None when no ledger is consulted (a reconcile's repair).

        A driver that notes its backend's ids there writes by id instead of searching
        again; the note may be behind the backend, so it is a hint, never the truth.
        """
        return self.ensure(instance_uuid, fqdn, addresses)

    def release_with(self, instance_uuid: str,
                     known: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """:meth:`release`, given the ledger's note (see :meth:`ensure_with`)."""
        return self.release(instance_uuid)

    def prefix_of(self, address: str) -> Optional[Any]:
        """The IPAM prefix (an ``ipaddress`` network) holding ``address``, None if unknown.

        The chain's first step refuses the network and broadcast address of it
        (tasks/preflight.py) before any backend holds the VM.
        """
        return None

    @abc.abstractmethod
    def describe(self, instance_uuid: str) -> Dict[str, Any]:
        """The addresses recorded for the instance."""

    @abc.abstractmethod
    def managed(self) -> Dict[str, Dict[str, Any]]:
        """Reconcile compares these with Nova (see Driver.managed)."""
