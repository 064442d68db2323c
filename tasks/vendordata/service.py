"""One vendordata answer: policy, the pre-boot steps, the join credential, the audit.

The steps run here, synchronously, through the drivers and the ledger the
workers use, under the same per-instance locks: the directory step of a
worker's chain and this service's never write one instance's computer object
at once, a delete (its tombstone) excludes both, and what one made the other
finds in the ledger and does not redo. A later read of the same instance costs
the ledger and the credential store, not the directory.

The work runs in the service's own threads and the HTTP thread waits for it at
most ``[vendordata] budget``: in a mass boot the directory is slower than Nova's
5 s read timeout allows, and an answer Nova no longer waits for is lost. At the
budget the guest is answered ``over_budget`` (retry) while the work goes on;
the read after Nova's 15 s cache finds it done. Reads of one instance that
arrive together share one job and its answer.

Before anything is written for an instance, the chain's shared validation runs
(tasks/preflight.py, as the workers' first writing step of the pre-boot chain
runs it): a name DNS would refuse later (reserved, the zone's own servers, held
by another's records) is refused here, before the directory holds it.

A computer object a worker's chain made already (the notification path runs
long before the guest's first metadata read) gets its credential ahead, from
one thread of its own ([vendordata] issue_ahead): a DC sets passwords one at a
time, and a mass boot's first reads otherwise queue behind each other's. Only
objects this ledger saw made within AHEAD_WINDOW and that have no password yet
are given one (a machine that joined otherwise keeps its own).

Answers about the instance are HTTP 200 with either the registration or an
``error`` (code, message, whether to retry): under Nova's DynamicJSON a 4xx or
5xx reaches the guest as ``{}``, and the guest's first-boot script should be
able to say why it did not join. Requests that are Nova's fault (bad JSON) are
400; the web layer answers 401 for a wrong or missing credential.
"""

import contextlib
import functools
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Dict, List, NamedTuple, Optional, Set, Tuple

from sqlalchemy import delete, select, update

from novahooks.event import InstanceEvent, new_event
from novahooks.logs import FIELDS
from novahooks.settings import Settings
from tasks import drivers, ledger as ledger_module, policy, preflight
from tasks.errors import (AuthFailed, Conflict, InvalidEvent, Misconfigured, OutOfScope,
                          PermanentError, StepError, TransientError)
from tasks.vendordata import join, request
from tasks.vendordata.credentials import CredentialStore, credentials, load_keys

LOG = logging.getLogger("novahooks.vendordata")
STEP = "vendordata.answer"
#: Seconds between sweeps that drop credentials of deleted instances and wipe expired ones.
SWEEP_EVERY = 60.0
#: Seconds between looks for computer objects a worker made that have no credential yet.
AHEAD_EVERY = 1.0
#: Only objects noted this recently get a credential ahead: an older one may belong to a
#: machine that joined by another path (its password is checked before any write too).
AHEAD_WINDOW = 3600.0
#: The first writing step of the workers' pre-boot chain, whose shared validation
#: (tasks/preflight.py) the service runs before it writes.
FIRST_WRITER = "ldap.register"


class Answer(NamedTuple):
    status: int
    body: Dict[str, Any]


class Deleted(PermanentError):
    """Nova asked about an instance whose delete has begun."""


class OverBudget(TransientError):
    """The work did not finish within the budget: answered so, and it goes on."""


def _code(exc: StepError) -> str:
    for kind, code in ((Deleted, "deleted"), (OverBudget, "over_budget"),
                       (Conflict, "conflict"), (InvalidEvent, "refused_name"),
                       (OutOfScope, "out_of_scope"), (AuthFailed, "backend_refused"),
                       (Misconfigured, "misconfigured"), (TransientError, "backend_unavailable")):
        if isinstance(exc, kind):
            return code
    return "refused"


class Vendordata(object):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = settings.vendordata
        self.book = ledger_module.ledger(settings.ledger.url, settings.ledger.sqlite_synchronous)
        self.store = CredentialStore(self.book.engine, load_keys(self.config.secret_key_file))
        self.steps: List[str] = list(self.config.steps)
        self.drivers: Dict[str, Any] = {}
        # The drivers keep their own timeouts: the answer leaves at the budget anyway, and
        # the work behind it should finish rather than fail for being slow in a mass boot.
        if "directory" in self.steps or settings.directory.driver == "ad":
            self.drivers["directory"] = drivers.load(
                "directory", settings.directory.driver, settings.directory)
        if "inventory" in self.steps:
            self.drivers["inventory"] = drivers.load(
                "inventory", settings.inventory.driver, settings.inventory)
        self.audit = [drivers.load("audit", name, settings.audit)
                      for name in settings.audit.drivers]
        self._swept = 0.0
        #: The work runs here, not on the HTTP thread, so that an answer leaves at the budget
        #: whatever the directory does; one job per instance at a time (a second read of it
        #: waits for the same job).
        self._pool = ThreadPoolExecutor(max_workers=self.config.threads,
                                        thread_name_prefix="vendordata-work")
        self._jobs: Dict[str, "Future[Answer]"] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        #: Instances whose credential could not be issued ahead: their read issues it.
        self._ahead_failed: Set[str] = set()
        if self.config.issue_ahead and "directory" in self.drivers:
            threading.Thread(target=self._ahead_loop, name="vendordata-ahead",
                             daemon=True).start()

    def close(self) -> None:
        """Stop issuing ahead and let the work in progress finish."""
        self._stopping.set()
        self._pool.shutdown(wait=True)

    def answer(self, body: bytes) -> Answer:
        """Nova's POST body -> the answer; never raises for anything a request can cause."""
        started = time.monotonic()
        try:
            event = request.parse(body, self.config)
        except InvalidEvent as exc:
            self._log(None, "bad_request", started, str(exc))
            return Answer(400, {"error": {"code": "bad_request", "message": str(exc),
                                          "retry": False}})
        with self._lock:
            job = self._jobs.get(event.uuid)
            if job is None:
                job = self._pool.submit(self._work, event, started)
                self._jobs[event.uuid] = job
                job.add_done_callback(functools.partial(self._done, event.uuid))
        try:
            return job.result(timeout=max(0.0, started + self.config.budget - time.monotonic()))
        except FutureTimeout:
            return self._over_budget(event, started)

    def _done(self, instance_uuid: str, job: "Future[Answer]") -> None:
        with self._lock:
            if self._jobs.get(instance_uuid) is job:
                del self._jobs[instance_uuid]

    def _over_budget(self, event: InstanceEvent, started: float) -> Answer:
        """Answer before Nova stops waiting; the work goes on and the next read gets it."""
        exc = OverBudget("no answer within [vendordata] budget (%.1f s); the registration "
                         "goes on and a later read gets its outcome" % self.config.budget,
                         backend="vendordata")
        error = "%s: %s" % (type(exc).__name__, exc)
        record = {"credential": "none"}
        try:
            self._audit(event, "failed", error, record)
        except Exception:  # noqa: BLE001 - this answer carries no credential
            LOG.exception("vendordata: audit of %s failed", event.uuid)
        self._log(event, "failed", started, error, record)
        return Answer(200, {"instance_id": event.uuid, "hostname": event.hostname,
                            "error": {"code": _code(exc), "message": str(exc),
                                      "retry": True}})

    def _work(self, event: InstanceEvent, started: float) -> Answer:
        """One instance's registration and answer, in the service's own pool of threads."""
        record: Dict[str, Any] = {}
        try:
            self._sweep()
            reply = self._register(event, record)
            stage, error = ("skipped" if reply.get("registered") is False else "done"), None
        except StepError as exc:
            error = "%s: %s" % (type(exc).__name__, exc)
            reply = {"instance_id": event.uuid, "hostname": event.hostname,
                     "error": {"code": _code(exc), "message": str(exc),
                               "retry": exc.transient}}
            stage = "failed"
        try:
            self._audit(event, stage, error, record)
        except Exception as exc:  # noqa: BLE001 - no credential leaves unaudited
            LOG.exception("vendordata: audit of %s failed", event.uuid)
            reply = {"instance_id": event.uuid, "hostname": event.hostname,
                     "error": {"code": "audit_unavailable", "retry": True,
                               "message": "the answer could not be audited: %s"
                               % type(exc).__name__}}
            stage, error = "failed", "audit: %s" % type(exc).__name__
        self._log(event, stage, started, error, record)
        return Answer(200, reply)

    def _register(self, event: InstanceEvent, record: Dict[str, Any]) -> Dict[str, Any]:
        decision = policy.decide(event, self.settings)
        record["policy"] = {"register": decision.register, "rule": decision.rule}
        if not decision.register:
            self.book.remember(event.uuid, policy.LEDGER_KEY, {"skipped": decision.rule})
            return {"instance_id": event.uuid, "registered": False, "rule": decision.rule}
        named = event._replace(hostname=decision.hostname)
        directory = self.settings.directory
        drivers.driver_class("directory", directory.driver).precheck(directory, named)
        kind = join.method(named, self.settings)
        with contextlib.ExitStack() as held:
            for step in self.steps or ["directory"]:
                held.enter_context(self.book.lock(event.uuid, step))
            if self.book.is_deleted(event.uuid):
                self.store.forget(event.uuid)
                raise Deleted("instance %s is being deleted or is gone" % event.uuid,
                              backend="vendordata")
            made = self.book.made(event.uuid)
            if any(step not in made for step in self.steps):
                preflight.run(FIRST_WRITER, named, decision)
            registered = {}
            for step in self.steps:
                if step not in made:
                    made[step] = self._register_step(step, named, made)
                    self.book.remember(event.uuid, step, made[step])
                registered[step] = made[step]
            record["registered"] = sorted(registered)
            reply: Dict[str, Any] = {"instance_id": event.uuid, "hostname": named.hostname,
                                     "fqdn": decision.fqdn, "registered": registered}
            if kind is None:
                record["credential"] = "none"
                return reply
            if "directory" not in made:
                raise Misconfigured("a join credential needs the computer object: add "
                                    "directory to [vendordata] steps", backend="vendordata")
            stored = self.store.get(event.uuid)
            if stored is None:
                secret = join.issue(kind, named, self.drivers["directory"], self.settings,
                                    self.settings.directory.timeout)
                stored = self.store.put(event.uuid, kind, secret, self.config.credential_ttl)
                record["credential"] = "issued"
            else:
                record["credential"] = "reused" if stored.secret is not None else "expired"
            record["join"] = stored.method
            if stored.secret is None:
                reply["join"] = {"method": stored.method, "expired": True,
                                 "message": "the join credential expired ([vendordata] "
                                 "credential_ttl); none is issued again"}
            else:
                reply["join"] = join.shown(stored.method, stored.secret, named, self.settings,
                                           stored.expires_at)
            return reply

    def _register_step(self, step: str, event: InstanceEvent,
                       made: Dict[str, Any]) -> Dict[str, Any]:
        """As the workers' step does: the inventory with the ledger's notes (tasks/inventory.py)."""
        if step == "inventory":
            return self.drivers[step].register_with(event, made)
        return self.drivers[step].register(event)

    def _ahead_loop(self) -> None:
        while not self._stopping.wait(AHEAD_EVERY):
            try:
                for instance_uuid, note in self._ahead_candidates():
                    if self._stopping.is_set():
                        return
                    self._ahead(instance_uuid, note)
            except Exception:  # noqa: BLE001 - the reads issue what this cannot
                LOG.exception("vendordata: issuing credentials ahead failed")

    def _ahead_candidates(self) -> List[Tuple[str, Dict[str, Any]]]:
        """Computer objects noted in the ledger lately, with no credential, not deleted."""
        records, instances = ledger_module.records, ledger_module.instances
        query = select(records.c.instance_uuid, records.c.detail).where(
            records.c.step == "directory",
            records.c.created_at > self.book.now() - AHEAD_WINDOW,
            records.c.instance_uuid.not_in(select(credentials.c.instance_uuid)),
            records.c.instance_uuid.not_in(select(instances.c.uuid).where(
                instances.c.deleted_at.is_not(None)))).order_by(records.c.created_at)
        with self.book.engine.connect() as conn:
            rows = conn.execute(query).all()
        found = []
        for instance_uuid, detail in rows:
            note = json.loads(detail)
            if instance_uuid not in self._ahead_failed and "windows" in note \
                    and str(note.get("sAMAccountName", "")).endswith("$"):
                found.append((instance_uuid, note))
        return found

    def _ahead(self, instance_uuid: str, note: Dict[str, Any]) -> None:
        """Issue one credential ahead of the guest's read, under the reads' own lock."""
        started = time.monotonic()
        event = new_event("create", instance_uuid, note["sAMAccountName"][:-1].lower(),
                          os_type="windows" if note["windows"] else "linux", addresses=None,
                          source="vendordata")
        kind = join.method(event, self.settings)
        if kind is None:
            self._ahead_failed.add(instance_uuid)
            return
        record: Dict[str, Any] = {"ahead": True}
        with self.book.lock(instance_uuid, "directory"):
            if self.book.is_deleted(instance_uuid) or \
                    self.store.get(instance_uuid) is not None or \
                    "directory" not in self.book.made(instance_uuid):
                return
            try:
                secret = join.issue(kind, event, self.drivers["directory"], self.settings,
                                    self.settings.directory.timeout)
            except StepError as exc:
                self._ahead_failed.add(instance_uuid)
                error = "%s: %s" % (type(exc).__name__, exc)
                record["credential"] = "none"
                self._audit(event, "failed", error, record)
                self._log(event, "failed", started, error, record)
                return
            self.store.put(instance_uuid, kind, secret, self.config.credential_ttl)
        record.update(credential="issued", join=kind, registered=["directory"])
        self._audit(event, "done", None, record)
        self._log(event, "done", started, None, record)

    def _sweep(self) -> None:
        """Drop the credentials of deleted instances, wipe expired ones (once a minute)."""
        now = time.time()
        if now - self._swept < SWEEP_EVERY:
            return
        self._swept = now
        gone = select(ledger_module.instances.c.uuid).where(
            ledger_module.instances.c.deleted_at.is_not(None))
        expired = self.book.now()
        with self.book.engine.begin() as conn:
            conn.execute(delete(credentials).where(credentials.c.instance_uuid.in_(gone)))
            conn.execute(update(credentials).where(credentials.c.expires_at < expired)
                         .where(credentials.c.token.is_not(None)).values(token=None))

    def _audit(self, event: InstanceEvent, stage: str, error: Optional[str],
               record: Dict[str, Any]) -> None:
        """What was decided and handed out: the credential's kind, never its value."""
        entry = {"time": time.time(), "instance_uuid": event.uuid, "hostname": event.hostname,
                 "kind": "vendordata", "event_id": event.event_id, "source": event.source,
                 "emitted_at": event.emitted_at, "stage": stage, "step": STEP,
                 "error": error, "attempts": None, "addresses": []}
        entry.update(record)
        for sink in self.audit:
            sink.record(entry)

    def _log(self, event: Optional[InstanceEvent], stage: str, started: float,
             error: Optional[str], record: Optional[Dict[str, Any]] = None) -> None:
        line: Dict[str, Any] = {"step": STEP, "outcome": stage,
                                "duration_ms": round((time.monotonic() - started) * 1000, 2)}
        if event is not None:
            line.update(instance_uuid=event.uuid, hostname=event.hostname)
        for key in ("credential", "join"):
            if record and key in record:
                line[key] = record[key]
        if error:
            line["error"] = error
        LOG.log(logging.WARNING if error else logging.INFO, "%s %s", STEP, stage,
                extra={FIELDS: line})
