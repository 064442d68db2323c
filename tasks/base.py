"""The behaviour every step shares, declared once.

Retry policy (transient errors only, exponential backoff with jitter, bounded),
parsing and validating the event before any backend call, one structured log
line per outcome, and an audit record when a step gives up. Step modules hold
only the fifteen lines that differ.
"""

import json
import logging
import time
from typing import Any, Dict

from celery import Task
from celery.exceptions import Retry

from novahooks.nova.event import EventFormatError, InstanceEvent, event_from_dict
from tasks import validate
from tasks.config import settings
from tasks.errors import InvalidEvent, TransientError

LOG = logging.getLogger("novahooks.step")


def _summary(payload: Any) -> Dict[str, Any]:
    if not isinstance(payload, dict):
        return {}
    return {"instance_uuid": payload.get("uuid"), "hostname": payload.get("hostname"),
            "kind": payload.get("kind"), "event_id": payload.get("event_id")}


class StepTask(Task):
    """Base class of every ``<step>.<action>`` task."""

    autoretry_for = (TransientError,)
    retry_backoff = 1
    retry_backoff_max = settings().retry.backoff_max
    retry_jitter = True
    max_retries = settings().retry.max_retries
    acks_late = True
    reject_on_worker_lost = True
    #: The backend kind this task talks to, for logs and audit. (Not ``backend``:
    #: Celery's Task uses that name for the result backend.)
    backend_kind = ""

    def parse(self, payload: Any, needs_hostname: bool = True) -> InstanceEvent:
        """The validated event; a malformed one is a permanent error naming the field."""
        try:
            event = event_from_dict(payload)
        except EventFormatError as exc:
            raise InvalidEvent(exc.field, str(exc)) from None
        return validate.event(event, needs_hostname=needs_hostname)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        outcome, error = "ok", None  # type: str, Optional[str]
        try:
            return super().__call__(*args, **kwargs)
        except Retry as exc:
            outcome, error = "retry", str(exc.exc or exc)
            raise
        except Exception as exc:
            outcome, error = "failed", "%s: %s" % (type(exc).__name__, exc)
            raise
        finally:
            line = {"step": self.name, "backend": self.backend_kind, "outcome": outcome,
                    "attempt": self.request.retries + 1,
                    "duration_ms": round((time.monotonic() - started) * 1000, 2)}
            line.update(_summary(args[0] if args else None))
            if error:
                line["error"] = error
            LOG.log(logging.WARNING if error else logging.INFO, json.dumps(line, sort_keys=True))

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        """A step that gave up stops its chain; the audit trail must still say so."""
        if self.name.startswith("audit.") or not args:
            return
        self.app.send_task("audit.record", args=[args[0], "failed"], queue="audit",
                           kwargs={"step": self.name, "error": "%s: %s" % (type(exc).__name__, exc),
                                   "attempts": self.request.retries + 1})
