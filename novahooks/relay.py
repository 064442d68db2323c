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
from typing import Optional

from novahooks.nova.event import EventFormatError, event_from_json
from novahooks.nova.outbox import Outbox
from novahooks.settings import Settings

LOG = logging.getLogger("novahooks.relay")


class Relay(object):
    def __init__(self, settings: Settings, outbox: Optional[Outbox] = None) -> None:
        from tasks.app import app  # Celery stays out of the hook side's import graph
        self.app = app
        self.settings = settings
        self.outbox = outbox or Outbox(settings.outbox.path, settings.outbox.busy_timeout_ms)
        self.published = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def publish_pending(self) -> int:
        """Publish one batch; returns how many events left the outbox."""
        from tasks import chains
        batch = self.outbox.pending(self.settings.relay.batch)
        done = []
        try:
            with self.app.producer_or_acquire() as producer:
                for item in batch:
                    try:
                        event = event_from_json(item.body)
                    except EventFormatError as exc:
                        LOG.error("outbox event %d is unreadable, dropped: %s", item.seq, exc)
                        done.append(item.seq)
                        continue
                    chains.build(self.app, json.loads(item.body)).apply_async(
                        producer=producer, retry=False)
                    done.append(item.seq)
                    LOG.debug("published %s %s (seq %d)", event.kind, event.uuid, item.seq)
        except Exception as exc:  # noqa: BLE001 - broker down: keep the rest for later
            if len(done) < len(batch):
                self.outbox.note_failure(batch[len(done)].seq, str(exc))
            LOG.warning("publishing stopped after %d of %d events: %s", len(done), len(batch), exc)
            raise
        finally:
            self.outbox.remove(done)
            self.published += len(done)
        return len(done)

    def run(self, once: bool = False) -> None:
        """Publish until stopped; ``once`` drains what is there and returns."""
        backoff = self.settings.relay.poll_interval
        beat = 0.0
        while not self._stop.is_set():
            if time.monotonic() - beat > 5.0:
                self.outbox.heartbeat(self.published)
                beat = time.monotonic()
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


def main_loop(settings: Settings) -> None:
    relay = Relay(settings)
    LOG.info("relay publishing from %s to %s", settings.outbox.path,
             settings.broker.url.split("@")[-1])
    try:
        relay.run()
    except KeyboardInterrupt:
        pass
    finally:
        LOG.info("relay stopped after %d events", relay.published)
        time.sleep(0)
