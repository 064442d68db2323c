"""What any later step of a chain would refuse, asked by its first writing step.

A chain writes backend after backend: when DNS refused a name only at its own
step, IPAM (and, from the pre-boot chain, the directory) already held the VM,
and nothing took that back. So the first step that writes runs every check a
later one would make, reading the backends but writing none: the name and
addresses as DNS would take them (scope, reverse zones, reserved names, names
and PTRs held by others, delegations), the name as the directory would take it
(reserved and existing account names), and the addresses as IPAM would take
them (network and broadcast addresses of their prefix, where the IPAM driver
knows it: ``prefix_of``; in no prefix, or held by another instance or by
something not ours: ``IpamDriver.preflight``). The later steps check again when
they write (the backends may have changed since): this only moves the refusal
in front of the first write.

First writers: ``dns.register`` (build and network chains, where DNS goes first so
that it does not queue behind NetBox: README "Why DNS comes first") and
``ldap.register`` of the pre-boot chain (``create``), which has no address yet.

A later step's backend that does not answer (a transient error) is not waited
for: its own step retries until it does, as before, and it is not asked again
for :data:`DOWN_FOR` seconds, so a NetBox outage does not stall DNS behind a
timeout per event. Only permanent refusals move forward.
"""

import ipaddress
import logging
import time
from typing import Any, Callable, Dict, Optional

from novahooks.event import InstanceEvent
from tasks import drivers
from tasks.chains import CREATE
from tasks.errors import InvalidEvent, TransientError
from tasks.policy import Decision

LOG = logging.getLogger("novahooks.preflight")
#: The first step of the build and network chains (tasks/chains.py CREATE).
FIRST_WRITER = CREATE[0]
DOWN_FOR = 30.0
_down_until: Dict[str, float] = {}


def run(step: str, event: InstanceEvent, decision: Decision,
        took: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """Raise the PermanentError a later step of ``event``'s chain would raise.

    Returns the seconds each backend asked took, in ``took`` if given (so a refusal,
    which raises, still leaves them there): the step's log line shows them
    (``preflight_ms``), since a later step's backend that is slow under load makes the
    first step slow, and nothing else would say which backend it was.
    """
    fqdn = decision.fqdn
    took = {} if took is None else took
    if step == FIRST_WRITER:
        if fqdn is not None and event.addresses:
            _ask("ipam", lambda: _ipam(event, fqdn), took)
        _ask("directory", lambda: drivers.directory().preflight(event), took)
    elif not (step == "ldap.register" and event.kind == "create"):
        return took
    if fqdn is not None:
        _ask("dns", lambda: drivers.dns().preflight(fqdn, event.uuid, event.addresses or []),
             took)
    return took


def _ask(kind: str, check: Callable[[], None], took: Optional[Dict[str, float]] = None) -> None:
    if time.monotonic() < _down_until.get(kind, 0.0):
        return
    started = time.monotonic()
    try:
        check()
    except TransientError as exc:
        _down_until[kind] = time.monotonic() + DOWN_FOR
        LOG.warning("preflight: %s not asked for %.0f s, it did not answer: %s", kind,
                    DOWN_FOR, exc)
    finally:
        if took is not None:
            took[kind] = time.monotonic() - started


def _ipam(event: InstanceEvent, fqdn: str) -> None:
    """A network or broadcast address of its IPAM prefix is no host's address; then what
    ``ipam.reserve`` would refuse (in no prefix, held by another)."""
    ipam = drivers.ipam()
    addresses = event.addresses or []
    for index, item in enumerate(addresses):
        problem = host_problem(item.address, ipam.prefix_of(item.address))
        if problem:
            raise InvalidEvent("addresses[%d].address" % index, problem)
    ipam.preflight(event.uuid, fqdn, addresses)


def host_problem(address: str, network: Optional[Any]) -> Optional[str]:
    """Why ``address`` cannot be a VM's address in ``network`` (its IPAM prefix), or None."""
    ip = ipaddress.ip_address(address)
    if network is None or ip.version != 4 or network.prefixlen >= 31:
        return None  # IPv6 has no broadcast; /31 and /32 use every address (RFC 3021)
    if ip == network.network_address:
        return "%s is the network address of %s" % (address, network)
    if ip == network.broadcast_address:
        return "%s is the broadcast address of %s" % (address, network)
    return None
