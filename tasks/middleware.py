"""What runs around every step, one concern per piece.

``StepTask.__call__`` used to do all of this in three nested ``try`` blocks; each
concern is now a small piece with one job, composed in one place (:data:`STACK`)
and tested on its own (tests/tasks/test_middleware.py). Outermost first:

* :class:`Outcome`: time the run, name its outcome (ok, skipped, retry, requeued, parked,
  failed), one metrics observation and one structured log line, whatever happens;
* :class:`Deliveries`: count redeliveries of a message whose worker died; past
  ``[retry] max_deliveries`` deliver it again alone, and park it as poison only if it
  kills that process too; settle the count once a delivery finishes;
* :class:`Skips`: a step that must do nothing (policy left the VM out, the instance
  was deleted, a newer event already reached the backend) ends ``skipped`` with the
  reason, not as an error;
* :class:`Progress`: note the step as done for the event in the ledger, which
  ``reconcile`` reads to find chains that stopped half-way.

Dead letters stay in ``StepTask.on_failure``: Celery calls it only once a step has
given up, which is the moment a dead letter is right.
"""

import functools
import logging
import os
import pickle
import time
from typing import Any, Callable, Dict, Optional, Sequence

from celery.exceptions import Reject, Retry

from novahooks.logs import FIELDS
from tasks import metrics, policy
from tasks.chains import step_key
from tasks.config import settings
from tasks.errors import TransientError
from tasks.ledger import Ledger, book

LOG = logging.getLogger("novahooks.step")

Call = Callable[[], Any]


class StepSkipped(Exception):
    """A register step that must do nothing for this event: the outcome is ``skipped``.

    Raised under the instance lock (the tombstone or a newer version was found there),
    after the ledger noted it for the chain's audit record.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Run(object):
    """One run of one step: the task, its arguments, and what the pieces learn."""

    def __init__(self, task: Any, args: Sequence[Any], kwargs: Dict[str, Any],
                 ledger: Optional[Ledger] = None) -> None:
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self._ledger = ledger
        self.outcome = "ok"
        self.error: Optional[str] = None
        #: The policy rule that left the VM out (``skipped_by`` in the log line).
        self.skipped_by: Optional[str] = None
        #: Why a step that ran did nothing (``skipped`` in the log line).
        self.skipped: Optional[str] = None

    @property
    def ledger(self) -> Ledger:
        """The ledger given (a test's), else the worker's from its settings."""
        return self._ledger if self._ledger is not None else book()

    @property
    def event(self) -> Optional[Dict[str, Any]]:
        """The event payload, when the message carries one as its first argument."""
        first = self.args[0] if self.args else None
        return first if isinstance(first, dict) else None

    @property
    def redelivered(self) -> bool:
        """The broker gave this message back after a worker took it.

        RabbitMQ marks a requeued message itself; kombu's Redis transport marks
        every message it restores (worker lost, visibility timeout, shutdown).
        """
        request = self.task.request
        return request.id is not None and \
            bool((request.delivery_info or {}).get("redelivered"))

    @property
    def delivery_key(self) -> str:
        return "%s:%d" % (self.task.request.id, self.task.request.retries)


class Middleware(object):
    def around(self, run: Run, call: Call) -> Any:
        return call()


class Outcome(Middleware):
    """Every run ends in exactly one log line and one metrics observation."""

    def around(self, run: Run, call: Call) -> Any:
        started = time.monotonic()
        try:
            return call()
        except Retry as exc:
            run.outcome, run.error = "retry", str(exc.exc or exc)
            raise
        except Reject as exc:
            run.outcome = "requeued" if exc.requeue else "parked"
            run.error = str(exc.reason)
            raise
        except Exception as exc:
            run.outcome, run.error = "failed", "%s: %s" % (type(exc).__name__, exc)
            raise
        finally:
            self._report(run, time.monotonic() - started)

    @staticmethod
    def _report(run: Run, seconds: float) -> None:
        task = run.task
        backend = getattr(task, "_backend_seconds", 0.0)
        line: Dict[str, Any] = {
            "step": task.name, "backend": task.backend_kind, "outcome": run.outcome,
            "attempt": task.request.retries + 1, "duration_ms": round(seconds * 1000, 2),
            "backend_ms": round(backend * 1000, 2),
            "lock_wait_ms": round(getattr(task, "_lock_seconds", 0.0) * 1000, 2)}
        asked = getattr(task, "_preflight_seconds", None)
        if asked:
            line["preflight_ms"] = {kind: round(s * 1000, 2) for kind, s in asked.items()}
        event = run.event or {}
        line.update({"instance_uuid": event.get("uuid"), "hostname": event.get("hostname"),
                     "kind": event.get("kind"), "event_id": event.get("event_id")})
        for key, value in (("error", run.error), ("skipped_by", run.skipped_by),
                           ("skipped", run.skipped)):
            if value:
                line[key] = value
        metrics.observe(task.name, run.outcome, seconds, backend)
        LOG.log(logging.WARNING if run.error else logging.INFO, "%s %s", task.name,
                run.outcome, extra={FIELDS: line})


#: The message header that marks a delivery to be run alone, in a process of its own.
PROBE_HEADER = "novahooks_probe"
#: After the probe's process died: how long a kill of this whole process group (which
#: would take this process too) is given to arrive before the death counts as proof.
PROBE_GRACE_S = 0.5


class Deliveries(Middleware):
    """Park a message as poison only once it is shown to kill the process that runs it.

    A worker that dies takes every message it held with it: the one that killed it,
    if any, and the innocent ones that were merely running or reserved when an
    operator, a container runtime or the OOM killer took the whole worker. Counting
    deaths cannot tell them apart. So a message whose worker died
    ``[retry] max_deliveries`` times is not parked but published again (which also
    resets the RabbitMQ quorum queue's own delivery count, see celeryconfig.py),
    ``[retry] poison_cooldown`` seconds later and marked as a probe. A probe runs
    alone in a process forked for it while this one watches: if that process dies
    and this one is still alive after a short grace, the message killed it and is
    parked; if this one dies as well, something else killed them both and the probe
    is delivered again like any other message.

    A first delivery writes nothing (most messages are delivered once, and the ledger
    write was a large part of a step's own cost); only a delivery whose worker died
    stays counted.
    """

    def __init__(self, max_deliveries: Optional[int] = None,
                 cooldown: Optional[float] = None) -> None:
        #: None: ``[retry] max_deliveries`` and ``poison_cooldown`` of the worker's settings.
        self.max_deliveries = max_deliveries
        self.cooldown = cooldown

    def around(self, run: Run, call: Call) -> Any:
        try:
            deaths = self._deaths(run)
        except TransientError as exc:  # the ledger itself is briefly unavailable
            raise run.task.retry(exc=exc) from exc
        try:
            if deaths >= self._limit():
                self._suspect(run, deaths)
            if _probe_of(run) is not None:
                return self._probe(run, call, deaths)
            return call()
        finally:
            if run.outcome != "parked" and run.redelivered:
                try:
                    run.ledger.settled(run.delivery_key)
                except TransientError:
                    LOG.warning("could not settle delivery count of %s", run.task.name,
                                exc_info=True)

    def _limit(self) -> int:
        return self.max_deliveries if self.max_deliveries is not None else \
            settings().retry.max_deliveries

    @staticmethod
    def _deaths(run: Run) -> int:
        """How many times this message's worker died with it (the first delivery: 0)."""
        if not run.redelivered:
            return 0
        return run.ledger.delivered(run.delivery_key)

    def _suspect(self, run: Run, deaths: int) -> None:
        """Publish the message again as a probe, after the cool-down, and end this delivery."""
        task = run.task
        request = task.request
        earlier = _probe_of(run) or 0
        headers = dict(getattr(request, "headers", None) or {})
        headers[PROBE_HEADER] = earlier + deaths
        cooldown = self.cooldown if self.cooldown is not None else \
            settings().retry.poison_cooldown
        run.ledger.settled(run.delivery_key)
        LOG.warning("%s: its worker died %d times while it was held; delivering it again "
                    "alone in %s s", task.name, earlier + deaths, cooldown)
        # A probe never uses up the step's retries for transient errors.
        limit = max(task.max_retries or 0, request.retries + 1)
        raise task.retry(countdown=cooldown, headers=headers, max_retries=limit)

    def _probe(self, run: Run, call: Call, deaths: int) -> Any:
        """Run ``call`` alone in a child process; park the message if it kills that child."""
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child ends in os._exit, coverage never sees it
            os.close(reader)
            _run_alone(run, call, writer)
        os.close(writer)
        with os.fdopen(reader, "rb") as answer:
            data = answer.read()
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # reaped by a SIGCHLD handler of the pool's own
            status = None
        if data:
            outcome = pickle.loads(data)
            for name, value in outcome["run"].items():
                setattr(run, name, value)
            for name, value in outcome["task"].items():
                setattr(run.task, name, value)
            if "raised" in outcome:
                raise outcome["raised"]
            return outcome["result"]
        time.sleep(PROBE_GRACE_S)  # a kill of the whole worker would have ended us too
        total = (_probe_of(run) or 0) + deaths
        error = "PoisonMessage: killed the process that ran it alone (%s), after its " \
            "worker had died %d times while it was held; parked" % (_status(status), total)
        run.outcome = "parked"
        run.task.on_failure(RuntimeError(error), run.task.request.id, run.args, run.kwargs,
                            None)
        raise Reject(error, requeue=False)


def _probe_of(run: Run) -> Optional[int]:
    """The deaths that made this message a probe, or None for an ordinary delivery."""
    headers = getattr(run.task.request, "headers", None) or {}
    value = headers.get(PROBE_HEADER)
    return int(value) if value is not None else None


def _run_alone(run: Run, call: Call, writer: int) -> None:
    """The probe's child: fresh backend connections, the step, its outcome to the parent."""
    from tasks import drivers
    for cached in vars(drivers).values():
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()  # loaded again here: the parent's connections stay its own
    request = run.task.request
    # a retry published from here is an ordinary message again: it survived its probe
    request.headers = {k: v for k, v in (getattr(request, "headers", None) or {}).items()
                       if k != PROBE_HEADER}
    outcome: Dict[str, Any] = {}
    try:
        outcome["result"] = call()
    except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the parent
        outcome["raised"] = exc
    outcome["run"] = {name: getattr(run, name) for name in
                      ("outcome", "error", "skipped", "skipped_by")}
    outcome["task"] = {name: getattr(run.task, name) for name in
                       ("_backend_seconds", "_lock_seconds") if hasattr(run.task, name)}
    try:
        data = pickle.dumps(outcome)
    except Exception as exc:  # noqa: BLE001 - an exception that cannot cross the pipe
        outcome.pop("result", None)
        outcome["raised"] = RuntimeError("probe outcome not transferable: %s: %s"
                                         % (type(exc).__name__, exc))
        data = pickle.dumps(outcome)
    with os.fdopen(writer, "wb") as out:
        out.write(data)
    os._exit(0)


def _status(status: Optional[int]) -> str:
    if status is None:
        return "its exit status was taken by another handler"
    if os.WIFSIGNALED(status):
        return "signal %d" % os.WTERMSIG(status)
    return "exit code %d" % os.WEXITSTATUS(status)


class Skips(Middleware):
    """A step that must do nothing ends ``skipped``, with the reason, not as an error."""

    def around(self, run: Run, call: Call) -> Any:
        try:
            return call()
        except policy.Skipped as exc:
            run.outcome, run.skipped_by = "skipped", exc.decision.rule
            return {"skipped": str(exc), "rule": exc.decision.rule}
        except StepSkipped as exc:
            run.outcome, run.skipped = "skipped", exc.reason
            return {"skipped": exc.reason}


class Progress(Middleware):
    """Note the step done for its event once it finished (skipped included).

    Finished means the plan's closing step ran, not merely "end of this message's
    chain": a chain cut short by a crash is not finished.
    """

    def around(self, run: Run, call: Call) -> Any:
        result = call()
        event = run.event
        if event is not None and run.kwargs.get("stage") != "failed":
            task = run.task
            last = not task.request.chain and task.name == "audit.record"
            try:
                run.ledger.step_done(event, step_key(task.name, run.kwargs), last=last)
            except TransientError:
                # The work is done; without this note reconcile may redo it, harmlessly.
                LOG.warning("could not record progress of %s", task.name, exc_info=True)
        return result


#: Outermost first.
STACK: Sequence[Middleware] = (Outcome(), Deliveries(), Skips(), Progress())


def run_through(stack: Sequence[Middleware], run: Run, step: Call) -> Any:
    """Call ``step`` inside every piece of ``stack``, the first one outermost."""
    if not stack:
        return step()
    return stack[0].around(run, functools.partial(run_through, stack[1:], run, step))
