"""Which steps run, in which order, for each kind of event.

Signatures are built by task name, so the relay and the notification
listener publish chains without importing any backend library.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

from celery import Celery, chain

#: No step consumes another's result, so the fast backends (DNS, the directory) go first
#: and DNS does not queue behind NetBox in a burst; IPAM's refusals are asked ahead by the
#: first writer (tasks/preflight.py). README "Why DNS comes first".
CREATE = ("dns.register", "ldap.register", "ipam.reserve", "inventory.register")
#: register step -> the step that removes what it made
REVERSE = {"ipam.reserve": "ipam.release", "dns.register": "dns.deregister",
           "ldap.register": "ldap.deregister", "inventory.register": "inventory.deregister",
           "inventory.update": "inventory.deregister"}

Step = Tuple[str, Dict[str, Any]]

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
}  # type: Dict[str, Tuple[Step, ...]]


def step_key(name: str, kwargs: Dict[str, Any]) -> str:
    """A step's identity within its plan: the delete plan runs audit.record twice."""
    stage = kwargs.get("stage")
    return "%s:%s" % (name, stage) if stage and stage != "done" else name


def steps(kind: str) -> List[str]:
    return [step_key(name, kwargs) for name, kwargs in PLANS[kind]]


def _chain(app: Celery, event: Dict[str, Any], plan: Sequence[Step]) -> chain:
    """Every signature immutable, so each step sees the event only, never a result."""
    return chain(*[app.signature(name, args=(event,), kwargs=kwargs, immutable=True,
                                 queue=name.split(".", 1)[0]) for name, kwargs in plan])


def build(app: Celery, event: Dict[str, Any], start_at: Optional[str] = None) -> chain:
    """The chain for one event, or its remainder from step ``start_at`` (replay, reconcile)."""
    plan = PLANS[event["kind"]]
    if start_at is not None:
        keys = steps(event["kind"])
        if start_at not in keys:
            raise ValueError("step %s is not part of a %s chain" % (start_at, event["kind"]))
        plan = plan[keys.index(start_at):]
    return _chain(app, event, plan)


def remaining(kind: str, done: Sequence[str]) -> Optional[str]:
    """The first step of an unfinished chain that has not run.

    An unfinished chain has not run its closing step, whatever else it did.
    """
    keys = steps(kind)
    for key in keys[:-1]:
        if key not in done:
            return key
    return keys[-1]


def undo(app: Celery, event: Dict[str, Any], failed_step: str) -> None:
    """Remove what the steps before ``failed_step`` made (operator policy 'undo')."""
    names = [name for name, _ in PLANS[event["kind"]]][:-1] if event.get("kind") in PLANS \
        else []
    if failed_step not in names or failed_step not in REVERSE:
        return
    done = names[:names.index(failed_step)]
    plan = [(REVERSE[name], {"undo": True}) for name in reversed(done) if name in REVERSE]
    if plan:
        _chain(app, event, plan + [("audit.record", {"stage": "undone"})]).apply_async()
