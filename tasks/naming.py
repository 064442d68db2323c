"""The DNS name of an instance, as tasks/policy.py gives it, for removals and reconcile.

IPAM's ``dns_name`` and the DNS records must agree, so both take the name from
the same policy decision (register steps through StepTask.admit).
"""

from typing import Optional

from novahooks.event import InstanceEvent
from tasks import policy
from tasks.config import settings
from tasks.errors import InvalidEvent, Misconfigured, OutOfScope


def fqdn(event: InstanceEvent) -> str:
    found = policy.name(event, settings()).fqdn
    if found is None:
        raise InvalidEvent("addresses", "the DNS name of %s needs its networks, which are not "
                           "known yet" % event.uuid)
    return found


def fqdn_or_none(event: InstanceEvent) -> Optional[str]:
    """For removals: an instance whose name was never valid never got a record."""
    try:
        return fqdn(event)
    except (InvalidEvent, Misconfigured, OutOfScope):
        return None
