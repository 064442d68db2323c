"""The behaviour every step shares, declared once.

Retry policy (transient errors only, exponential backoff with jitter, bounded),
parsing and validating the event before any backend call, the naming and
opt-in decision of tasks/policy.py for register steps (``admit``), the per-instance
lock and tombstone check around the backend call, the ledger of what was made
and which steps finished, one structured log line per outcome, and a dead
letter plus an audit record when a step gives up. Step modules hold only the
few lines that differ.
"""

import logging
import time
from typing import Any, Callable, Dict, Optional, Tuple

from celery import Task
from celery.exceptions import Reject, Retry

from novahooks.logs import FIELDS
from novahooks.event import EventFormatError, InstanceEvent, describe_order, event_from_dict
from tasks import drivers, metrics, policy, preflight, validate
from tasks.chains import step_key
from tasks.config import settings
from tasks.errors import InvalidEvent, TransientError
from tasks.ledger import Ledger, ledger

LOG = logging.getLogger("novahooks.step")


def _summary(payload: Any) -> Dict[str, Any]:
    if not isinstance(payload, dict):
        return {}
    return {"instance_uuid": payload.get("uuid"), "hostname": payload.get("hostname"),
            "kind": payload.get("kind"), "event_id": payload.get("event_id")}


class StepSkipped(Exception):
    """A register step that must do nothing for this event: the outcome is ``skipped``.

    Raised under the instance lock (the tombstone or a newer version was found there),
    after the ledger noted it for the chain's audit record.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def book() -> Ledger:
    config = settings().ledger
    return ledger(config.url, config.sqlite_synchronous)


class StepTask(Task):
    """Base class of every ``<step>.<action>`` task."""

    autoretry_for = (TransientError,)
    retry_backoff = 1
    retry_backoff_max = settings().retry.backoff_max
    retry_jitter = True
    max_retries = settings().retry.max_retries
    acks_late = True
    reject_on_worker_lost = True
    #: The backend kind this task talks to, for logs, ledger and audit. (Not
    #: ``backend``: Celery's Task uses that name for the result backend.)
    backend_kind = ""

    def parse(self, payload: Any, needs_hostname: bool = True) -> InstanceEvent:
        """The validated event; a malformed one is a permanent error naming the field."""
        try:
            event = event_from_dict(payload)
        except EventFormatError as exc:
            raise InvalidEvent(exc.field, str(exc)) from None
        return validate.event(event, needs_hostname=needs_hostname)

    def admit(self, payload: Any) -> Tuple[InstanceEvent, policy.Decision]:
        """A register step's event, named as tasks/policy.py says, and that decision.

        A VM that policy leaves out raises policy.Skipped before any backend is
        touched, after a note in the ledger that lets its delete remove nothing.
        """
        event = self.parse(payload, needs_hostname=False)
        decision = policy.decide(event, settings())
        if not decision.register:
            book().remember(event.uuid, policy.LEDGER_KEY, {"skipped": decision.rule})
            raise policy.Skipped(decision)
        named = event._replace(hostname=decision.hostname)
        directory = settings().directory
        drivers.driver_class("directory", directory.driver).precheck(directory, named)
        preflight.run(self.name, named, decision)  # the first writer asks for the whole chain
        return named, decision

    def backend_call(self, action: Callable[[], Any]) -> Any:
        """Run one backend call, adding its time to the run's ``backend_ms``: a step's
        duration minus that is what Celery, the ledger and validation cost."""
        started = time.monotonic()
        try:
            return action()
        finally:
            self._backend_seconds = getattr(self, "_backend_seconds", 0.0) + \
                time.monotonic() - started

    def register(self, event: InstanceEvent,
                 action: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        """Run a register action unless the instance was deleted or the backend already
        got a newer event's state (raises StepSkipped).

        Check and write happen under the lock that excludes this step's other runs for
        the instance, so of two events the newer one's state is what stays, whichever
        chain comes last. An equal version runs again (a redelivery, a replay).
        """
        ledger_ = book()
        waited = time.monotonic()
        order = event.ordering()
        with ledger_.lock(event.uuid, self.backend_kind):
            self._lock_seconds = time.monotonic() - waited
            deleted, applied = ledger_.register_state(event.uuid, self.backend_kind)
            reason = None
            if deleted:
                reason = "instance %s was deleted" % event.uuid
            elif applied is not None and order < applied.order:
                reason = "superseded by %s (%s; this event %s)" % (
                    applied.event_id or "an event", describe_order(applied.order),
                    describe_order(order))
            if reason is not None:
                ledger_.note_skip(event.event_id, self.name, reason)
                raise StepSkipped(reason)
            result = self.backend_call(action)
            ledger_.remember(event.uuid, self.backend_kind, result, order, event.event_id)
        return result

    def deregister(self, event: InstanceEvent, action: Callable[[], Dict[str, Any]],
                   undo: bool = False) -> Dict[str, Any]:
        """Run a removal; a real delete (not an undo) first leaves a tombstone."""
        ledger_ = book()
        waited = time.monotonic()
        with ledger_.lock(event.uuid):
            self._lock_seconds = time.monotonic() - waited
            if not undo:
                ledger_.tombstone(event.uuid, event.hostname)
            made = ledger_.made(event.uuid)
            if policy.LEDGER_KEY in made and self.backend_kind not in made:
                # Policy left it out and this step never made anything for it: whatever
                # the backend holds under its name or addresses belongs to someone else.
                return {"skipped": "never registered (%s)"
                        % made[policy.LEDGER_KEY].get("skipped")}
            result = self.backend_call(action)
            ledger_.forget(event.uuid, self.backend_kind)
        return result

    def _redelivered(self) -> bool:
        """The broker gave this message back after a worker took it.

        RabbitMQ marks a requeued message itself; kombu's Redis transport marks
        every message it restores (worker lost, visibility timeout, shutdown).
        """
        return self.request.id is not None and \
            bool((self.request.delivery_info or {}).get("redelivered"))

    def _park_poison(self, args: Any, kwargs: Any) -> None:
        """Count a redelivery; past the limit, park the message instead of running it.

        Rejecting (without requeue) stops the chain here; the dead letter keeps the event.
        A first delivery writes nothing: most messages are delivered once, and the
        ledger write was a large part of a step's own cost.
        """
        if not self._redelivered():
            return
        key = "%s:%d" % (self.request.id, self.request.retries)
        count = book().delivered(key) + 1  # the first delivery is not counted
        limit = settings().retry.max_deliveries
        if count <= limit:
            return
        error = "PoisonMessage: delivered %d times without finishing (worker died each " \
                "time); parked" % count
        self.on_failure(RuntimeError(error), self.request.id, args, kwargs, None)
        book().settled(key)
        raise Reject(error, requeue=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        self._backend_seconds = self._lock_seconds = 0.0
        outcome: str = "ok"
        error: Optional[str] = None
        skipped: Optional[str] = None
        why: Optional[str] = None
        try:
            try:
                self._park_poison(args, kwargs)
            except TransientError as exc:  # the ledger itself is briefly unavailable
                raise self.retry(exc=exc) from exc
            try:
                result = super().__call__(*args, **kwargs)
            except policy.Skipped as exc:
                outcome, skipped = "skipped", exc.decision.rule
                result = {"skipped": str(exc), "rule": skipped}
            except StepSkipped as exc:
                outcome, why = "skipped", exc.reason
                result = {"skipped": why}
            if args and isinstance(args[0], dict) and kwargs.get("stage") != "failed":
                # Finished means the plan's closing step ran, not merely "end of this
                # message's chain": a chain cut short by a crash is not finished.
                last = not self.request.chain and self.name == "audit.record"
                try:
                    book().step_done(args[0], step_key(self.name, kwargs), last=last)
                except TransientError:
                    # The work is done; without this note reconcile may redo it, harmlessly.
                    LOG.warning("could not record progress of %s", self.name, exc_info=True)
            return result
        except Retry as exc:
            outcome, error = "retry", str(exc.exc or exc)
            raise
        except Reject as exc:
            outcome, error = "parked", str(exc.reason)
            raise
        except Exception as exc:
            outcome, error = "failed", "%s: %s" % (type(exc).__name__, exc)
            raise
        finally:
            if outcome != "parked" and self._redelivered():
                # Only a delivery whose worker died stays counted.
                try:
                    book().settled("%s:%d" % (self.request.id, self.request.retries))
                except TransientError:
                    LOG.warning("could not settle delivery count of %s", self.name,
                                exc_info=True)
            line = {"step": self.name, "backend": self.backend_kind, "outcome": outcome,
                    "attempt": self.request.retries + 1,
                    "duration_ms": round((time.monotonic() - started) * 1000, 2),
                    "backend_ms": round(self._backend_seconds * 1000, 2),
                    "lock_wait_ms": round(self._lock_seconds * 1000, 2)}
            line.update(_summary(args[0] if args else None))
            if error:
                line["error"] = error
            if skipped:
                line["skipped_by"] = skipped
            if why:
                line["skipped"] = why
            metrics.observe(self.name, outcome, time.monotonic() - started,
                            self._backend_seconds)
            LOG.log(logging.WARNING if error else logging.INFO, "%s %s", self.name, outcome,
                    extra={FIELDS: line})

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        """A step that gave up stops its chain: keep the event as a dead letter and say so."""
        if not args or kwargs.get("stage") == "failed":
            return
        error = str(exc) if str(exc).startswith("PoisonMessage") else \
            "%s: %s" % (type(exc).__name__, exc)
        attempts = self.request.retries + 1
        try:
            book().dead_letter(args[0], step_key(self.name, kwargs), error, attempts)
        except Exception:  # noqa: BLE001 - the audit record below must still go out
            LOG.exception("could not store dead letter for %s", self.name)
        if self.name.startswith("audit."):
            return
        self.app.send_task("audit.record", args=[args[0], "failed"], queue="audit",
                           kwargs={"step": self.name, "error": error, "attempts": attempts})
        if settings().ledger.on_permanent_failure == "undo":
            from tasks.chains import undo
            undo(self.app, args[0], failed_step=self.name)
