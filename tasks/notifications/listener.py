"""``novahooks listen``: oslo.messaging's notification listener feeding the outbox.

Why the outbox and not a direct publish with publisher confirms: appending to
the local SQLite outbox (WAL, ``synchronous=NORMAL``: it survives a crash of
this process) takes well under a millisecond and never waits on the Celery
broker, so a slow or absent broker never holds Nova's notifications
unacknowledged on RabbitMQ; the relay already publishes outbox events in order,
with confirms, backoff, metrics and a status line, and the same chains as the
hooks' events. A notification is acknowledged only after its events are in the
outbox (or its spool file); if this process dies before the acknowledgement,
RabbitMQ delivers the notification again and the idempotent steps absorb the
duplicate. Run ``novahooks relay`` beside the listener, on the same outbox.

One notification at a time (one executor thread, and a lock): the listener's
own state (:mod:`tasks.notifications.store`) must see ``delete.start``
before ``delete.end`` and ``create.end`` before a floating IP of that VM, as
the bus delivered them.

What is acknowledged without effect, with a log line saying why: notifications
that change nothing registered, and malformed ones (missing payload fields,
unknown payload versions). A body that is not JSON, or an envelope of an
unknown ``oslo.version``, never reaches this code: oslo.messaging logs
"Failed to process message ... skipping it." with the decoding error and
rejects it without requeueing.
"""

import logging
import signal
import threading
import time
from typing import Any, Dict, List, Optional
from urllib.parse import quote, urlsplit, urlunsplit

from novahooks.logs import FIELDS
from novahooks.nova.outbox import Outbox
from novahooks.notifications import message
from novahooks.notifications.message import Malformed
from novahooks.notifications.plan import decide
from novahooks.notifications.state import EmptyState
from tasks.notifications.store import State
from novahooks.settings import Settings

LOG = logging.getLogger("novahooks.listener")

#: Seconds to wait before handing a notification back when the outbox or the state
#: database refused it, so a lasting fault does not spin on redeliveries.
REQUEUE_PAUSE = 1.0


def transport_url(settings: Settings) -> str:
    """``[notifications] transport_url`` with the password (kept out of the file) put in.

    Each host of a multi-host URL that names a user but no password gets it.
    """
    section = settings.notifications
    url = section.transport_url
    password = section.password.reveal()
    if not password:
        return url
    parts = urlsplit(url)
    hosts = []
    for host in parts.netloc.split(","):
        user, at, rest = host.rpartition("@")
        if at and ":" not in user:
            host = "%s:%s@%s" % (user, quote(password, safe=""), rest)
        hosts.append(host)
    return urlunsplit(parts._replace(netloc=",".join(hosts)))


def redacted(url: str) -> str:
    return ",".join(host.rpartition("@")[-1] for host in urlsplit(url).netloc.split(","))


class Handler(object):
    """What the listener does with one notification, apart from the transport."""

    def __init__(self, outbox: Outbox, state: EmptyState) -> None:
        self.outbox = outbox
        self.state = state
        self.counts = {"enqueued": 0, "ignored": 0, "malformed": 0, "requeued": 0}
        self._lock = threading.Lock()

    def _log(self, level: int, outcome: str, text: str, fields: Dict[str, Any]) -> None:
        fields["outcome"] = outcome
        LOG.log(level, text, extra={FIELDS: fields})

    def receive(self, priority: str, publisher_id: Any, event_type: Any, payload: Any,
                metadata: Any) -> bool:
        """Handle one notification; False: hand it back to the bus (nothing was lost)."""
        with self._lock:
            return self._receive(priority, publisher_id, event_type, payload, metadata)

    def _receive(self, priority: str, publisher_id: Any, event_type: Any, payload: Any,
                 metadata: Any) -> bool:
        meta = metadata if isinstance(metadata, dict) else {}
        fields = {"event_type": str(event_type), "publisher_id": str(publisher_id),
                  "message_id": meta.get("message_id")}  # type: Dict[str, Any]
        try:
            note = message.from_listener(priority, publisher_id, event_type, payload, metadata)
            plan = decide(note, self.state)
        except Malformed as exc:
            self.counts["malformed"] += 1
            self._log(logging.WARNING, "malformed", "malformed notification %s acknowledged "
                      "without effect: %s" % (event_type, exc), dict(fields, error=str(exc)))
            return True
        except Exception as exc:  # noqa: BLE001 - the state database is unreachable
            return self._requeue(fields, "reading listener state", exc)
        try:
            for event in plan.events:
                self.outbox.append(event.uuid, event.kind, event.to_json())
        except Exception as exc:  # noqa: BLE001 - outbox and spool both refused
            return self._requeue(fields, "appending to the outbox", exc)
        try:
            self.state.apply(plan.effects)
        except Exception as exc:  # noqa: BLE001 - redelivery appends again: harmless
            return self._requeue(fields, "recording listener state", exc)
        if plan.events:
            self.counts["enqueued"] += len(plan.events)
            for event in plan.events:
                self._log(logging.INFO, "enqueued", "%s: %s event for %s" % (
                    note.event_type, event.kind, event.uuid), dict(
                        fields, instance_uuid=event.uuid, hostname=event.hostname,
                        kind=event.kind, event_id=event.event_id,
                        addresses=[a.address for a in event.addresses or []]))
        else:
            self.counts["ignored"] += 1
            self._log(logging.INFO, "ignored", "%s: ignored, %s" % (note.event_type, plan.ignored),
                      dict(fields, reason=plan.ignored))
        return True

    def _requeue(self, fields: Dict[str, Any], doing: str, exc: Exception) -> bool:
        self.counts["requeued"] += 1
        error = "%s: %s" % (type(exc).__name__, exc)
        self._log(logging.ERROR, "requeued", "%s failed, notification %s handed back to the "
                  "bus: %s" % (doing, fields["event_type"], error), dict(fields, error=error))
        time.sleep(REQUEUE_PAUSE)
        return False


class Endpoint(object):
    """oslo.messaging calls one method per priority; Nova's build errors come at ERROR."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def _result(self, handled: bool) -> Optional[str]:
        import oslo_messaging
        return None if handled else oslo_messaging.NotificationResult.REQUEUE

    def info(self, ctxt: Any, publisher_id: Any, event_type: Any, payload: Any,
             metadata: Any) -> Optional[str]:
        return self._result(self.handler.receive("INFO", publisher_id, event_type, payload,
                                                 metadata))

    def error(self, ctxt: Any, publisher_id: Any, event_type: Any, payload: Any,
              metadata: Any) -> Optional[str]:
        return self._result(self.handler.receive("ERROR", publisher_id, event_type, payload,
                                                 metadata))


def targets(settings: Settings) -> List[Any]:
    import oslo_messaging
    section = settings.notifications
    return [oslo_messaging.Target(topic=topic, exchange=exchange)
            for exchange, topics in ((section.nova_exchange, section.nova_topics),
                                     (section.neutron_exchange, section.neutron_topics))
            for topic in topics]


def build(settings: Settings, handler: Handler) -> Any:
    """The oslo.messaging notification server (not started)."""
    import oslo_messaging
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    conf([], project="novahooks", default_config_files=[], default_config_dirs=[])
    transport = oslo_messaging.get_notification_transport(conf, url=transport_url(settings))
    conf.set_override("amqp_durable_queues", settings.notifications.durable_queues,
                      group="oslo_messaging_rabbit")
    server = oslo_messaging.get_notification_listener(
        transport, targets(settings), [Endpoint(handler)], executor="threading",
        allow_requeue=True, pool=settings.notifications.pool or None)
    conf.set_override("executor_thread_pool_size", 1)
    return server


def main_loop(settings: Settings) -> None:
    # oslo.service warns at import that eventlet is deprecated, a multi-line block on
    # stderr: through logging it becomes one JSON line like every other.
    logging.captureWarnings(True)
    handler = Handler(Outbox(settings.outbox.path, settings.outbox.busy_timeout_ms),
                      State(settings.ledger.url))
    server = build(settings, handler)
    stop = threading.Event()

    def finish(signum: int, frame: Any) -> None:
        stop.set()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, finish)
    server.start()
    section = settings.notifications
    LOG.info("listening on %s, queue %s: exchange %s topics %s, exchange %s topics %s; "
             "events to outbox %s" % (
                 redacted(section.transport_url), section.pool or "(per topic)",
                 section.nova_exchange, ",".join(section.nova_topics),
                 section.neutron_exchange, ",".join(section.neutron_topics),
                 settings.outbox.path))
    try:
        stop.wait()
    finally:
        server.stop()
        server.wait()
        LOG.info("listener stopped: %s" % ", ".join("%s %d" % kv for kv in
                                                   handler.counts.items()))
