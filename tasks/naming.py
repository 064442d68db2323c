"""The one place that turns an instance into its DNS name.

IPAM's ``dns_name`` and the DNS records must agree, so both ask here.
"""

from typing import Optional

from novahooks.nova.event import InstanceEvent
from tasks import validate
from tasks.config import settings
from tasks.errors import InvalidEvent, Misconfigured


def fqdn(event: InstanceEvent) -> str:
    zone = settings().dns.zone
    if not zone:
        raise Misconfigured("[dns] zone is not set; cannot name %s" % event.uuid)
    return validate.fqdn(validate.hostname(event.hostname), zone)


def fqdn_or_none(event: InstanceEvent) -> Optional[str]:
    """For removals: an instance whose name was never valid never got a record."""
    try:
        return fqdn(event)
    except (InvalidEvent, Misconfigured):
        return None
