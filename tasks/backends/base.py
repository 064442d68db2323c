"""What every driver is, whatever its kind: built from its settings section, checkable, listable.

    Driver                        __init__(settings), check(), managed()
    ├── IpamDriver                ensure, release, describe       (ipam/base.py)
    ├── DnsDriver                 register, deregister, describe  (dns/base.py)
    ├── DirectoryDriver           register, deregister, describe  (directory/base.py)
    ├── InventoryDriver           register, deregister, describe  (inventory/base.py)
    └── AuditDriver               record                          (audit/base.py)

Each kind keeps its own verbs, because what a step asks of IPAM (hold exactly
these addresses) is not what it asks of an audit trail (append this). What they
share is what the tools around the steps use: ``novahooks check`` calls
``check()`` on every configured driver, ``novahooks reconcile`` calls
``managed()``. A driver is constructed from its own section only and raises
``Misconfigured`` there, so a wrong setting fails at start, not at the first VM.
"""

import abc
from typing import Any, Dict


class Driver(abc.ABC):
    def __init__(self, settings: Any) -> None:
        self.settings = settings

    @abc.abstractmethod
    def check(self) -> str:
        """Reach the backend with the configured credentials; say what answered.

        Raises a StepError naming the problem (unreachable, refused, misconfigured).
        """

    def managed(self) -> Dict[str, Dict[str, Any]]:
        """Every instance this backend holds records for: uuid -> what it holds (for drift).

        Not every backend can say: a DNS server lists a zone only to a zone transfer
        the update key may not do, and an audit trail is never reconciled. Those
        kinds leave this as it is; reconcile asks them per instance instead.
        """
        raise NotImplementedError("%s cannot list the instances it holds" % type(self).__name__)
