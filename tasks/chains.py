"""Which steps run, in which order, for each kind of event.

Signatures are built by task name, so the relay and the notification
listener publish chains without importing any backend library.
"""

from typing import Any, Dict, List

from celery import Celery, chain

CREATE = ("ipam.reserve", "dns.register", "ldap.register", "inventory.register")

#: kind -> steps, each (task name, extra kwargs). The last step is always the audit record.
PLANS = {
    # create_instance: no addresses yet, so only what needs none, before boot.
    "create": (("ldap.register", {}), ("inventory.register", {}), ("audit.record", {})),
    "build": tuple((name, {}) for name in CREATE) + (("audit.record", {}),),
    "network": tuple((name, {}) for name in CREATE) + (("audit.record", {}),),
    "delete": (("audit.record", {"stage": "start"}), ("inventory.deregister", {}),
               ("ldap.deregister", {}), ("dns.deregister", {}), ("ipam.release", {}),
               ("audit.record", {})),
    "resize": (("inventory.update", {}), ("audit.record", {})),
}  # type: Dict[str, Tuple[Tuple[str, Dict[str, Any]], ...]]


def steps(kind: str) -> List[str]:
    return [name for name, _ in PLANS[kind]]


def build(app: Celery, event: Dict[str, Any]) -> chain:
    """The chain for one event; every signature immutable, so each step sees the event only."""
    sigs = []  # type: List[Signature]
    for name, kwargs in PLANS[event["kind"]]:
        sigs.append(app.signature(name, args=(event,), kwargs=kwargs, immutable=True,
                                  queue=name.split(".", 1)[0]))
    return chain(*sigs)
