"""The IPAM contract: the records for an instance equal its addresses, keyed by its UUID."""

import abc
from typing import Any, Dict, Sequence

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

    @abc.abstractmethod
    def describe(self, instance_uuid: str) -> Dict[str, Any]:
        """The addresses recorded for the instance."""

    @abc.abstractmethod
    def managed(self) -> Dict[str, Dict[str, Any]]:
        """Reconcile compares these with Nova (see Driver.managed)."""
