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
import threading
import time
from typing import Any, Callable, Dict, Tuple

from celery import Task
from celery.exceptions import Reject
from kombu.exceptions import OperationalError as BrokerRefused

from novahooks.event import EventFormatError, InstanceEvent, describe_order, event_from_dict
from tasks import drivers, middleware, policy, preflight, validate
from tasks.chains import step_key
from tasks.config import settings
from tasks.errors import InvalidEvent, TransientError
from tasks.ledger import book
from tasks.middleware import StepSkipped

LOG = logging.getLogger("novahooks.step")


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
    #: A task object serves every run in its process, several at once in a threads pool
    #: (the NetBox steps' batching): a run's timings are its thread's.
    _timings = threading.local()

    @property
    def _backend_seconds(self) -> float:
        return float(getattr(self._timings, "backend", 0.0))

    @_backend_seconds.setter
    def _backend_seconds(self, value: float) -> None:
        self._timings.backend = value

    @property
    def _preflight_seconds(self) -> Dict[str, float]:
        return getattr(self._timings, "preflight", {})  # type: ignore[no-any-return]

    @_preflight_seconds.setter
    def _preflight_seconds(self, value: Dict[str, float]) -> None:
        self._timings.preflight = value

    @property
    def _lock_seconds(self) -> float:
        return float(getattr(self._timings, "lock", 0.0))

    @_lock_seconds.setter
    def _lock_seconds(self, value: float) -> None:
        self._timings.lock = value

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
        # The first writer asks for the whole chain; the times stay for the log line even
        # when a backend refuses (the dict is filled as each one answers).
        took: Dict[str, float] = {}
        self._preflight_seconds = took
        preflight.run(self.name, named, decision, took)
        return named, decision

    def backend_call(self, action: Callable[[], Any]) -> Any:
        """Run one backend call, adding its time to the run's ``backend_ms``: a step's
        duration minus that is what Celery, the ledger and validation cost."""
        started = time.monotonic()
        try:
            return action()
        finally:
            self._backend_seconds += time.monotonic() - started

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

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery answers a retry it could not publish (the broker is down) with a Reject
        that drops the message and reports the task failed, which dead-letters an event
        for a fault that is transient by nature. Requeue it instead: the broker gets it
        back (or, unreachable even for the reject, redelivers the unacknowledged message)
        and the step runs again once the broker is back."""
        try:
            return super().retry(*args, **kwargs)
        except Reject as exc:
            if exc.requeue:
                raise
            LOG.warning("%s: could not publish the retry (%s); the message goes back to "
                        "the broker", self.name, exc.reason)
            raise Reject(exc.reason, requeue=True) from exc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The step inside what every step shares (tasks/middleware.py: outcome, delivery
        counting and poison parking, skips, progress)."""
        self._backend_seconds = self._lock_seconds = 0.0
        self._preflight_seconds = {}
        return middleware.run_through(middleware.STACK, middleware.Run(self, args, kwargs),
                                      lambda: super(StepTask, self).__call__(*args, **kwargs))

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        """A step that gave up stops its chain: keep the event as a dead letter and say so.

        Not so when the broker refused a message: Celery reports a step failed when its
        work is done and only the chain's next message could not be published (the broker
        was down past the publish retries). That is no failure of the event: the ledger
        keeps the chain open and ``novahooks reconcile`` resumes it at the next step; a
        dead letter would have hidden it from reconcile until an operator replayed it.
        """
        if not args or kwargs.get("stage") == "failed":
            return
        if isinstance(exc, BrokerRefused):
            LOG.warning("%s: the broker did not take the chain's next message (%s); the "
                        "chain stays open for reconcile ([ledger] stalled_after)",
                        self.name, exc)
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
