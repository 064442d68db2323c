"""Audit step: one record per chain outcome, to every configured audit sink.

It takes the raw event dict rather than a validated one: an event too broken
to register is exactly what the audit trail must still show.
"""

import functools
import time
from typing import Any, Dict, List, Optional

from tasks import drivers, policy
from tasks.backends.audit import redact
from tasks.app import app
from tasks.base import StepTask, book
from tasks.config import settings


@app.task(base=StepTask, bind=True, name="audit.record", backend_kind="audit")
def record(self: StepTask, event: Any, stage: str = "done", step: Optional[str] = None,
           error: Optional[str] = None, attempts: Optional[int] = None) -> Dict[str, Any]:
    data = event if isinstance(event, dict) else {"raw": repr(event)[:1000]}
    entry = {
        "time": time.time(),
        "instance_uuid": data.get("uuid"),
        "hostname": data.get("hostname"),
        "kind": data.get("kind"),
        "event_id": data.get("event_id"),
        "source": data.get("source"),
        "emitted_at": data.get("emitted_at"),
        "stage": stage,
        "step": step,
        "error": error,
        "attempts": attempts,
        "addresses": [a.get("address") for a in data.get("addresses") or []
                      if isinstance(a, dict)],
    }
    if data.get("kind") in ("create", "build", "network", "resize"):
        # Which rule registered or left out this VM, and its name: the same decision
        # the steps took (tasks/policy.py is pure, so asking again gives the same answer).
        decided = policy.explain(data, settings())
        entry["policy"] = {key: decided[key] for key in ("register", "rule", "fqdn", "error")
                           if decided.get(key) is not None}
        if stage == "done":
            # Steps of this chain that left their backend alone (a newer event's state
            # was there, or a delete began): the record says so, step by step.
            skipped = book().skipped_steps(str(data.get("event_id") or ""))
            if skipped:
                entry["skipped"] = {step: "skipped: %s" % reason
                                    for step, reason in sorted(skipped.items())}
    if data.get("uuid"):
        # What each register step's backend reported for this VM (the LDAP entry's DN,
        # ...): ties the record to the backend's own objects.
        made = book().made(str(data["uuid"]))
        if made:
            entry["backends"] = made
    # A secret that slipped into an error or a detail must not be signed into the log.
    entry = redact.scrub(entry, _secrets())
    for sink in drivers.audit():
        self.backend_call(functools.partial(sink.record, entry))
    return {"stage": stage}


@functools.lru_cache(maxsize=1)
def _secrets() -> List[str]:
    return redact.secrets_of(settings())
