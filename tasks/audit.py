"""Audit step: one record per chain outcome, to every configured audit sink.

It takes the raw event dict rather than a validated one: an event too broken
to register is exactly what the audit trail must still show.
"""

import functools
import time
from typing import Any, Dict, Optional

from tasks import drivers, policy
from tasks.app import app
from tasks.base import StepTask
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
    for sink in drivers.audit():
        self.backend_call(functools.partial(sink.record, entry))
    return {"stage": stage}
