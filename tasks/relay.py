"""The relay: moves events from a host's outbox to the broker as Celery chains.

One relay per Nova host, in its own environment with Celery 5. It publishes in
outbox order and deletes an event only after the broker accepted its chain;
a crash in between republishes it, which idempotent tasks absorb. While the
broker is down it backs off and the outbox simply grows: nothing is dropped
and Nova never notices.
"""

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from novahooks.event import EventFormatError, InstanceEvent, event_from_json, microseconds
from novahooks.nova.outbox import Outbox
from novahooks.settings import Settings

if TYPE_CHECKING:
    from tasks.gate_service import GateService

LOG = logging.getLogger("tasks.relay")


class _Metrics(object):
    """Relay metrics; prometheus-client is imported only where the relay runs."""

    def __init__(self, port: int, address: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram, start_http_server
        self.events = Counter("novahooks_relay_events_total",
                              "Events taken from the outbox and published, by kind", ["kind"])
        self.latency = Histogram("novahooks_relay_publish_seconds",
                                 "Time to publish one event's chain to the broker",
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.25, 1, 5))
        self.failures = Counter("novahooks_relay_publish_failures_total",
                                "Publishing attempts the broker did not accept")
        self.depth = Gauge("novahooks_outbox_depth", "Events waiting in the outbox")
        self.oldest = Gauge("novahooks_outbox_oldest_age_seconds",
                            "Age of the oldest event waiting in the outbox")
        start_http_server(port, addr=address)


class Relay(object):
    def __init__(self, settings: Settings, outbox: Optional[Outbox] = None) -> None:
        from tasks.app import app  # Celery stays out of the hook side's import graph
        from tasks.publisher import ChainPublisher
        self.app = app
        self.settings = settings
        self.outbox = outbox or Outbox(settings.outbox.path, settings.outbox.busy_timeout_ms)
        self.publisher = ChainPublisher(app)
        self.published = 0
        self._stop = threading.Event()
        self.metrics = _Metrics(settings.metrics.relay_port, settings.metrics.address) \
            if settings.metrics.relay_port else None

    def stop(self) -> None:
        self._stop.set()

    def publish_pending(self) -> int:
        """Publish one batch; returns how many events left the outbox.

        Each chain goes out as the messages Celery builds (tasks/publisher.py). Where
        the transport batches (kombu's Redis pipeline) the whole batch is one round
        trip and its events leave the outbox only once that flush succeeded; elsewhere
        each event leaves once the broker took (confirmed) its own chain.
        """
        spooled = self.outbox.absorb_spool()
        if spooled:
            LOG.info("moved %d spooled events into the outbox", spooled)
        batch = self.outbox.pending(self.settings.relay.batch)
        parsed: Dict[int, Any] = {}
        for item in batch:
            try:
                parsed[item.seq] = event_from_json(item.body)
            except EventFormatError as exc:
                parsed[item.seq] = exc
        published = self._published_before([e.event_id for e in parsed.values()
                                            if isinstance(e, InstanceEvent) and e.event_id])
        bodies: Dict[int, str] = {}
        done: List[int] = []
        sent: List[Tuple[int, str]] = []
        current: Optional[int] = None
        started = time.perf_counter()
        try:
            with self.app.producer_or_acquire() as producer:
                channel = producer.channel
                batched = callable(getattr(channel, "create_publish_batch", None)) and \
                    getattr(channel, "supports_batch_publish", True)
                # two broker operations per chain (task message, task-sent event): the
                # pipeline is flushed once, when the block ends
                with producer.batch(2 * len(batch) + 1):
                    for item in batch:
                        event = parsed[item.seq]
                        if isinstance(event, EventFormatError):
                            LOG.error("outbox event %d is unreadable, dropped: %s", item.seq,
                                      event)
                            done.append(item.seq)
                            continue
                        if event.event_id and event.event_id in published:
                            # The same notification appended twice (a listener killed
                            # between outbox and acknowledgement), or this relay killed
                            # between publishing and forgetting: its chain went out.
                            LOG.info("outbox event %d (%s) was published before; not again",
                                     item.seq, event.event_id)
                            done.append(item.seq)
                            continue
                        published.add(event.event_id)
                        current = item.seq
                        event, text = self._bounded(event, item.body, item.seq)
                        if text is None:
                            done.append(item.seq)
                            continue
                        body = bodies[item.seq] = stamped(event, text, item.seq)
                        self.publisher.publish(producer, event.kind, body, retry=False,
                                               confirm_timeout=self.settings.broker.connect_timeout)
                        sent.append((item.seq, event.kind))
                        if not batched:
                            done.append(item.seq)
                        LOG.debug("published %s %s (seq %d)", event.kind, event.uuid, item.seq)
                    current = sent[0][0] if batched and sent else None
                if batched:
                    done.extend(seq for seq, _ in sent)
                current = None
        except Exception as exc:  # noqa: BLE001 - broker down: keep the rest for later
            if self.metrics is not None:
                self.metrics.failures.inc()
            if current is not None:
                self.outbox.note_failure(current, str(exc))
            LOG.warning("publishing stopped after %d of %d events: %s", len(done), len(batch), exc)
            raise
        finally:
            self._record(batch, bodies, done)
            self.outbox.remove(done)
            self.published += len(done)
        if self.metrics is not None and sent:
            share = (time.perf_counter() - started) / len(sent)
            for _, kind in sent:
                self.metrics.latency.observe(share)
                self.metrics.events.labels(kind).inc()
        return len(done)

    def _bounded(self, event: InstanceEvent, body: str,
                 seq: int) -> Tuple[InstanceEvent, Optional[str]]:
        """The event and JSON to publish within ``[limits] max_event_bytes``, or (event,
        None) for one too big to publish: logged and audited, then dropped (every worker
        would refuse it; its chain message, the event five times over, could even be
        refused unread). A delete goes out without the metadata it does not need."""
        limit = self.settings.limits.max_event_bytes
        size = len(body.encode("utf-8"))
        if size <= limit:
            return event, body
        if event.kind == "delete":
            slim = event._replace(metadata={}, image_properties={})
            text = slim.to_json()
            if len(text.encode("utf-8")) <= limit:
                LOG.warning("outbox event %d (delete of %s): %d bytes, sent without its "
                            "metadata", seq, event.uuid, size)
                return slim, text
        error = "event of %d bytes, above [limits] max_event_bytes %d; not published" % (
            size, limit)
        LOG.error("outbox event %d (%s of %s) refused: %s", seq, event.kind, event.uuid, error)
        summary = {"uuid": event.uuid, "kind": event.kind, "event_id": event.event_id,
                   "source": event.source,
                   "hostname": event.hostname[:63] if isinstance(event.hostname, str) else None}
        self.app.send_task("audit.record", args=[summary, "failed"], queue="audit",
                           kwargs={"step": "relay", "error": error})
        return event, None

    def _ledger(self) -> Any:
        from tasks.ledger import ledger
        return ledger(self.settings.ledger.url, self.settings.ledger.sqlite_synchronous)

    def _published_before(self, ids: List[str]) -> Set[str]:
        """Which of these event ids the ledger already saw published.

        When the ledger cannot answer, everything is published (a duplicate chain
        is harmless: its steps see their own version and run again idempotently).
        """
        try:
            return set(self._ledger().known_events(ids))
        except Exception as exc:  # noqa: BLE001 - publish anyway, see above
            LOG.warning("ledger did not say which events were published before (%s)", exc)
            return set()

    def _record(self, batch: List[Any], bodies: Dict[int, str], done: List[int]) -> None:
        """Tell the ledger which chains went out, before the outbox forgets them.

        If the ledger cannot take it the events stay in the outbox and go out
        again on the next pass: a duplicate chain is harmless, an untracked one
        that the broker then loses is not.
        """
        if not done:
            return
        finished = set(done)
        events = []
        for item in batch:
            if item.seq in finished and item.seq in bodies:
                try:
                    events.append(json.loads(bodies[item.seq]))
                except ValueError:
                    continue
        try:
            self._ledger().published(events)
        except Exception as exc:  # noqa: BLE001 - keep them in the outbox, publish again
            LOG.warning("ledger did not record %d published events (%s); they stay in the "
                        "outbox and go out again", len(done), exc)
            del done[:]

    def run(self, once: bool = False) -> None:
        """Publish until stopped; ``once`` drains what is there and returns."""
        backoff = self.settings.relay.poll_interval
        beat = gauged = 0.0
        while not self._stop.is_set():
            if time.monotonic() - beat > 5.0:
                self.outbox.heartbeat(self.published)
                beat = time.monotonic()
            if self.metrics is not None and time.monotonic() - gauged > 1.0:
                depth, oldest = self.outbox.depth()
                self.metrics.depth.set(depth)
                self.metrics.oldest.set(time.time() - oldest if oldest else 0)
                gauged = time.monotonic()
            try:
                count = self.publish_pending()
                backoff = self.settings.relay.poll_interval
            except Exception:  # noqa: BLE001 - logged in publish_pending
                count = 0
                backoff = min(backoff * 2, 10.0)
                if once:
                    raise
            if count == 0:
                if once:
                    return
                self._stop.wait(backoff)
            elif once and count < self.settings.relay.batch:
                return


_NO_ORDER = '"order":null'


def stamped(event: InstanceEvent, body: str, seq: int) -> str:
    """The event's JSON with its order: the hook's wall clock at the call (``emitted_at``)
    and this outbox's sequence as the tie-breaker (events of one host in the order its
    hooks appended them). Events that carry an order (the listener's: the
    notification's own time) go out as they are."""
    if event.order is not None:
        return body
    order = (microseconds(event.emitted_at), seq)
    if body.count(_NO_ORDER) == 1:
        # The hooks' compact, sorted JSON: "order":null can only be the event's own key
        # (every nested value is a string, a number or an object without that key).
        return body.replace(_NO_ORDER, '"order":[%d,%d]' % order)
    return event._replace(order=order).to_json()


def start_gate(relay: Relay) -> "Optional[GateService]":
    """With ``[gate] steps`` set, serve the endpoint the build_instance hook polls."""
    if not relay.settings.gate.steps:
        return None
    from tasks import gate_service

    def audit(event: dict, error: str) -> None:
        relay.app.send_task("audit.record", args=[event, "failed"], queue="audit",
                            kwargs={"step": "gate", "error": error})
    return gate_service.start(relay.settings, audit)


def main_loop(settings: Settings) -> None:
    relay = Relay(settings)
    gate = start_gate(relay)
    LOG.info("relay publishing from %s to %s", settings.outbox.path,
             settings.broker.url.split("@")[-1])
    try:
        relay.run()
    except KeyboardInterrupt:
        pass
    finally:
        if gate is not None:
            gate.stop()
        LOG.info("relay stopped after %d events", relay.published)
        time.sleep(0)
