"""Operator actions on the worker side: dead letters and stalled chains.

Kept apart from the CLI's argument parsing so that tests and other front ends
call the same code the command runs.
"""

import functools
import json
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from novahooks.settings import Settings


def _ledger(settings: Settings) -> Any:
    from tasks.ledger import ledger
    return ledger(settings.ledger.url, settings.ledger.sqlite_synchronous)


def dead_letters(settings: Settings, include_replayed: bool = False) -> List[Dict[str, Any]]:
    return _ledger(settings).dead_letters(include_replayed)


def dead_letter(settings: Settings, letter_id: int) -> Optional[Dict[str, Any]]:
    return _ledger(settings).dead_letter_by_id(letter_id)


def replay(settings: Settings, letter_id: Optional[int] = None) -> List[int]:
    """Publish the failed step and the rest of its chain again; returns the letters replayed."""
    from tasks import chains
    from tasks.app import app
    ledger = _ledger(settings)
    letters = [ledger.dead_letter_by_id(letter_id)] if letter_id is not None \
        else ledger.dead_letters()
    replayed = []
    for letter in letters:
        if letter is None or letter["replayed_at"]:
            continue
        event = json.loads(letter["event"])
        if event.get("kind") not in chains.PLANS or letter["step"] not in chains.steps(
                event["kind"]):
            continue
        chains.build(app, event, start_at=letter["step"]).apply_async()
        ledger.mark_replayed(letter["id"])
        replayed.append(int(letter["id"]))
    return replayed


def reconcile_stalled(settings: Settings,
                      older_than: Optional[float] = None) -> List[Dict[str, Any]]:
    """Find chains that stopped half-way and publish what they did not finish.

    ``settings`` names the ledger; the chains go out through ``tasks.app``, whose broker
    is the one of the configuration this process started with (``NOVAHOOKS_CONFIG``), as
    in the CLI. A process that serves several configurations runs the CLI for each
    (bench/common.py ``reconcile``).
    """
    from tasks import chains
    from tasks.app import app
    ledger = _ledger(settings)
    resumed = []
    now = ledger.now()
    for row in ledger.stalled(settings.ledger.stalled_after if older_than is None else older_than,
                              now):
        event = json.loads(row["event"])
        if event.get("kind") not in chains.PLANS:
            continue
        start = chains.remaining(event["kind"], row["done_steps"].split(","))
        if start is None:
            continue
        chains.build(app, event, start_at=start).apply_async()
        resumed.append({"event_id": row["event_id"], "instance_uuid": row["instance_uuid"],
                        "kind": row["kind"], "resumed_at_step": start,
                        "stalled_for_s": round(now - row["updated_at"], 1)})
    return resumed


def check(settings: Settings) -> List[Dict[str, Any]]:
    """Reach the broker, the ledger and every configured backend; one result each.

    Each check runs on its own, so one unreachable backend does not hide the
    state of the others.
    """
    from tasks.drivers import load

    def broker() -> str:
        from tasks.app import app
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=settings.broker.connect_timeout)
            uri = conn.as_uri()
        problems = _broker_exposure(settings)
        if problems:
            raise PermissionError("%s reachable, but %s" % (uri, "; ".join(problems)))
        return "%s reachable, password required, task messages signed" % uri

    def consumers() -> str:
        serving = _consumers()
        from celeryconfig import STEPS
        missing = [step for step in STEPS if not serving.get(step)]
        if missing:
            raise RuntimeError("no live worker consumes %s" % ", ".join(missing))
        return "every step queue has a live consumer (%s)" % ", ".join(
            "%s: %d" % (step, len(serving[step])) for step in STEPS)

    def ledger_() -> str:
        from sqlalchemy import text
        with _ledger(settings).engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "%s reachable" % settings.ledger.url.split("@")[-1]

    def backend(kind: str, driver: str, section: Any) -> str:
        return load(kind, driver, section).check()

    checks: List[Tuple[str, Callable[[], str]]] = [("broker", broker), ("consumers", consumers),
                                                   ("ledger", ledger_)]
    if settings.gate.steps:
        checks.append(("gate", functools.partial(_gate_answer, settings)))
    if settings.notifications.given:
        checks.append(("notifications", functools.partial(_notification_transport, settings)))
    if settings.vendordata.password:
        from tasks.vendordata.probe import probe as vendordata_probe
        checks.append(("vendordata", functools.partial(vendordata_probe, settings)))
    for kind, section in (("ipam", settings.ipam), ("dns", settings.dns),
                          ("directory", settings.directory),
                          ("inventory", settings.inventory)):
        checks.append((kind, functools.partial(backend, kind, section.driver, section)))
    for name in settings.audit.drivers:
        checks.append(("audit/%s" % name,
                       functools.partial(backend, "audit", name, settings.audit)))
    if settings.audit.verifier_key:
        # The Merkle log's latest checkpoint: signature, root, ages, anchors, verify failures.
        from tasks import audit_metrics
        checks.append(("audit/checkpoint", functools.partial(audit_metrics.check,
                                                             settings.audit)))
    results = []
    for name, probe in checks:
        try:
            results.append({"check": name, "ok": True, "detail": probe()})
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none hides others
            results.append({"check": name, "ok": False,
                            "detail": "%s: %s" % (type(exc).__name__, exc)})
    return results


def _broker_exposure(settings: Settings) -> List[str]:
    """What lets someone other than our processes drive the pipeline through the broker."""
    problems = []
    if not settings.broker.signing_key:
        problems.append("[broker] signing_key is not set: workers refuse every task message")
    scheme = settings.broker.url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss"):
        import urllib.parse

        import redis
        where = urllib.parse.urlsplit(settings.broker.url)
        try:
            # what the broker answers a client without the password
            redis.Redis(host=where.hostname or "127.0.0.1", port=where.port or 6379,
                        ssl=scheme == "rediss", socket_timeout=settings.broker.connect_timeout,
                        socket_connect_timeout=settings.broker.connect_timeout).ping()
            problems.append("it answers clients without a password (set requirepass, and "
                            "[broker] password_file)")
        except redis.exceptions.AuthenticationError:
            pass
        except redis.exceptions.ResponseError as exc:
            if "NOAUTH" not in str(exc):
                raise
    return problems


def _consumers() -> Dict[str, List[str]]:
    """step queue -> the live workers consuming it (those answering a broadcast now)."""
    from tasks.app import app
    replies = app.control.inspect(timeout=1.0).active_queues() or {}
    serving: Dict[str, List[str]] = {}
    for worker, queues in replies.items():
        for queue in queues or []:
            serving.setdefault(str(queue.get("name")), []).append(worker)
    return serving


def _notification_transport(settings: Settings) -> str:
    """``novahooks listen`` can reach [notifications] transport_url (each host of it)."""
    from urllib.parse import urlsplit

    from kombu import Connection

    from tasks.notifications.listener import redacted, transport_url
    url = transport_url(settings)
    parts = urlsplit(url)
    if parts.scheme not in ("rabbit", "amqp"):
        raise ValueError("%s transports are not probed; only rabbit:// and amqp://"
                         % parts.scheme)
    reached = []
    for host in parts.netloc.split(","):
        with Connection("amqp://%s%s" % (host, parts.path or "/"),
                        connect_timeout=settings.broker.connect_timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=settings.broker.connect_timeout)
        reached.append(host.rpartition("@")[-1])
    return "%s reachable (%s)" % (redacted(url), ", ".join(reached))


def _gate_answer(settings: Settings) -> str:
    """The relay on this host answers the pre-boot gate's socket (builds wait on it)."""
    from novahooks.nova import gate
    path = gate.socket_path(settings)
    try:
        gate.fetch_status(path, "0", timeout=2.0)
    except gate.GateUnavailable as exc:
        raise gate.GateUnavailable("no relay answers on %s (%s); gated builds will wait "
                                   "[gate] timeout, then %s" % (path, exc,
                                                                settings.gate.on_failure)) from None
    return "relay answers on %s; builds wait for %s" % (path, ", ".join(settings.gate.steps))


def status(settings: Settings) -> Dict[str, Any]:
    """Outbox backlog, relays, queue depths, workers and dead letters, in one look."""
    import os
    from novahooks.nova.outbox import Outbox
    from tasks.app import app
    from celeryconfig import STEPS
    report: Dict[str, Any] = {}
    if os.path.exists(settings.outbox.path):
        outbox = Outbox(settings.outbox.path)
        depth, oldest = outbox.depth()
        report["outbox"] = {"path": settings.outbox.path, "depth": depth,
                            "oldest_age_s": round(time.time() - oldest, 1) if oldest else None}
        report["relays"] = [{"pid": pid, "host": host, "last_seen_s": round(time.time() - at, 1),
                             "published": published}
                            for pid, host, at, published in outbox.relays()]
    else:
        report["outbox"] = {"path": settings.outbox.path, "depth": None,
                            "note": "no outbox on this host"}
        report["relays"] = []
    queues: Dict[str, Any] = {}
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=settings.broker.connect_timeout)
        channel = conn.default_channel
        for step in STEPS:
            if conn.transport.driver_type == "redis":
                # kombu keeps one list per priority level; an empty queue has no key.
                keys = [step] + ["%s\x06\x16%d" % (step, p) for p in range(1, 10)]
                queues[step] = sum(channel.client.llen(key) for key in keys)
                continue
            try:
                queues[step] = channel.queue_declare(step, passive=True).message_count
            except Exception as exc:  # noqa: BLE001 - a queue nobody declared yet
                queues[step] = "unknown (%s)" % type(exc).__name__
    report["queues"] = queues
    serving = _consumers()
    report["workers"] = sorted({name for names in serving.values() for name in names})
    report["consumers"] = {step: sorted(serving.get(step, [])) for step in STEPS}
    report["unconsumed"] = [step for step in STEPS if not serving.get(step)]
    report["dead_letters"] = len(_ledger(settings).dead_letters())
    report["gate"] = None
    if settings.gate.steps:
        try:
            report["gate"] = {"answering": True, "detail": _gate_answer(settings)}
        except Exception as exc:  # noqa: BLE001 - reported, as every other part
            report["gate"] = {"answering": False, "detail": str(exc)}
    return report
