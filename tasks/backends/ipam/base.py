"""The IPAM contract: the records for an instance equal its addresses, keyed by its UUID."""

import abc
from typing import Any, Dict, List, NotRequired, Optional, Sequence, TypedDict

from novahooks.event import Address
from tasks.backends.base import Driver


class IpamEnsured(TypedDict):
    """What ``ensure`` did, each a sorted list of plain addresses; the ledger keeps it as the
    step's note, which ``ensure_with`` gets back."""

    created: List[str]
    updated: List[str]
    released: List[str]
    #: NetBox's note: address -> IP address id, address -> its CIDR, the name, NetBox's URL.
    ids: NotRequired[Dict[str, int]]
    cidrs: NotRequired[Dict[str, str]]
    fqdn: NotRequired[str]
    netbox: NotRequired[str]
    #: The X-Request-ID of each write, found again in NetBox's changelog (the audit ties).
    netbox_request_ids: NotRequired[List[str]]


class IpamReleased(TypedDict):
    released: List[str]
    #: Addresses the note named that were gone already (someone removed them).
    already_gone: NotRequired[List[str]]
    netbox_request_ids: NotRequired[List[str]]


class IpamHeld(TypedDict):
    #: What the backend records for the instance (plain or CIDR notation, sorted).
    addresses: List[str]


class IpamDriver(Driver):
    @abc.abstractmethod
    def ensure(self, instance_uuid: str, fqdn: str,
               addresses: Sequence[Address]) -> IpamEnsured:
        """Record exactly these addresses for the instance; release any others it held.

        Every address is checked (in a known prefix, not held by another
        instance) before the first write, so a bad one leaves nothing behind.
        """

    @abc.abstractmethod
    def release(self, instance_uuid: str) -> IpamReleased:
        """Release every address the instance holds; none is success."""

    def ensure_with(self, instance_uuid: str, fqdn: str, addresses: Sequence[Address],
                    known: Optional[Dict[str, Any]]) -> IpamEnsured:
        """:meth:`ensure`, given what the last run returned: the ledger's note, ``{}`` when
        the ledger has none, None when no ledger is consulted (a reconcile's repair).

        A driver that notes its backend's ids there writes by id instead of searching
        again; the note may be behind the backend, so it is a hint, never the truth.
        """
        return self.ensure(instance_uuid, fqdn, addresses)

    def release_with(self, instance_uuid: str,
                     known: Optional[Dict[str, Any]]) -> IpamReleased:
        """:meth:`release`, given the ledger's note (see :meth:`ensure_with`)."""
        return self.release(instance_uuid)

    @abc.abstractmethod
    def preflight(self, instance_uuid: str, fqdn: str, addresses: Sequence[Address]) -> None:
        """Raise the PermanentError :meth:`ensure` would (OutOfScope, Conflict), writing nothing.

        The chain's first writing step runs it (tasks/preflight.py), and IPAM is no
        longer that step: DNS and the directory write before ``ipam.reserve``, so an
        address IPAM would refuse must be refused before them. ``ensure`` checks again
        when it writes (the backend may have changed in between).
        """

    def prefix_of(self, address: str) -> Optional[Any]:
        """The IPAM prefix (an ``ipaddress`` network) holding ``address``, None if unknown.

        The chain's first step refuses the network and broadcast address of it
        (tasks/preflight.py) before any backend holds the VM.
        """
        return None

    @abc.abstractmethod
    def describe(self, instance_uuid: str) -> IpamHeld:
        """The addresses recorded for the instance."""

    @abc.abstractmethod
    def managed(self) -> Dict[str, Dict[str, Any]]:
        """Reconcile compares these with Nova (see Driver.managed)."""
