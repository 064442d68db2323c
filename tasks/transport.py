"""kombu's Redis transport, except that a queue entry it cannot read never stops a worker.

kombu pops an entry off a step queue and parses it as its JSON envelope in the
worker's main process; an entry that is not JSON (``LPUSH ipam 'not json'``) or
not an envelope raises out of the event loop and Celery ends the whole pool
("Unrecoverable error: JSONDecodeError", celery #7975, #4308, open). Here such
an entry is moved aside to the list :data:`POISON` (newest first, at most
:data:`KEEP` kept, each cut to :data:`SAMPLE` characters), logged and counted
(``novahooks_messages_refused_total{reason="undecodable"}``), and the worker
takes the next entry.

And the visibility timeout is kept on the Redis server's clock: kombu dates each
delivery with the consuming worker's clock and restores (delivers again) what is
older than ``visibility_timeout`` by the clock of whichever worker looks, so a
worker host five minutes ahead handed every message that others had been running
for ``visibility_timeout - 300`` seconds to a second worker. Here both times are
Redis's ``TIME``. And dead workers' messages are looked for often enough
(:func:`sweep_options`). The rest is kombu's.

celeryconfig.py selects it (``broker_transport``) for ``redis://`` brokers.
"""

import json
import logging
import time
from queue import Empty
from typing import Any, Dict, Optional

from kombu.transport import redis as kombu_redis, virtual
from kombu.transport.redis import Mutex, MutexHeld
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from novahooks.logs import FIELDS

LOG = logging.getLogger("novahooks.broker")
#: where undecodable entries go (a Redis list)
POISON = "novahooks.poison"
KEEP = 1000
SAMPLE = 65536


def _envelope_problem(payload: Any) -> Optional[str]:
    """What keeps kombu and Celery from handling ``payload`` without raising, or None."""
    if not isinstance(payload, dict):
        return "not a JSON object but %s" % type(payload).__name__
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        return "no properties object"
    if not isinstance(properties.get("delivery_tag"), str):
        return "no delivery_tag text"
    info = properties.get("delivery_info")
    if not isinstance(info, dict) or not all(isinstance(info.get(k), str)
                                             for k in ("exchange", "routing_key")):
        return "no delivery_info with exchange and routing_key"
    priority = properties.get("priority")
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
        return "priority is not an integer"
    for key in ("body", "content-type", "content-encoding"):
        if payload.get(key) is not None and not isinstance(payload[key], str):
            return "%s is not text" % key
    if payload.get("headers") is not None and not isinstance(payload["headers"], dict):
        return "headers is not an object"
    return None


def sweep_options(visibility_timeout: int) -> Dict[str, int]:
    """Transport options that bring a dead worker's message back soon after its timeout.

    kombu 5.7 looks for deliveries older than the visibility timeout only every
    ``unacked_restore_interval`` x ``unacked_restore_throttle`` seconds (10 x 10 by
    default), and a worker killed during that sweep holds its mutex for
    ``unacked_mutex_expire`` (300 s): a SIGKILLed worker's message came back up to
    100 s (or 300 s) after its timeout rather than at it. Here the sweep runs every
    tenth of the timeout, between 1 and 10 s (a sweep is one indexed ZRANGE), and its
    mutex expires after the timeout itself, between 10 s and a minute.
    """
    return {"unacked_restore_interval": max(1, min(10, visibility_timeout // 10)),
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": max(10, min(60, visibility_timeout))}


def server_time(client: Any) -> float:
    """The Redis server's clock (``TIME``): one clock for every worker host."""
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


class QoS(kombu_redis.QoS):
    """kombu 5.7's Redis QoS with deliveries dated, and restored, by the server's clock."""

    def append(self, message: Any, delivery_tag: str) -> None:
        delivery = message.delivery_info
        with self.channel.conn_or_acquire() as client:
            now = server_time(client)
            client.pipeline().zadd(self.unacked_index_key, {delivery_tag: now}) \
                .hset(self.unacked_key, delivery_tag, dumps([
                    message._raw, delivery["exchange"], delivery["routing_key"]])) \
                .execute()
        virtual.QoS.append(self, message, delivery_tag)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        self._vrestore_count += 1
        if (self._vrestore_count - 1) % (interval or 1):
            return
        with self.channel.conn_or_acquire() as client:
            ceil = server_time(client) - self.visibility_timeout
            try:
                with Mutex(client, self.unacked_mutex_key, self.unacked_mutex_expire):
                    visible = client.zrange(self.unacked_index_key, ceil, 0, desc=True,
                                            byscore=True, offset=num and start, num=num,
                                            withscores=True)
                    for tag, _score in visible or []:
                        self.restore_by_tag(tag, client)
            except MutexHeld:
                pass


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _brpop_read(self, **options: Any) -> bool:
        """kombu 5.7's ``_brpop_read`` with the entry checked before it is delivered."""
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP",
                                                        **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            payload = self._readable(dest, item)
            if payload is not None:
                self.connection._deliver(payload, dest)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment] # as kombu does
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _readable(self, queue: str, item: Any) -> Optional[Any]:
        """The entry's envelope, or None once it has been moved aside."""
        text = bytes_to_str(item)
        limit = _limit()
        if len(text) > limit:
            self._poison(queue, text, "entry of %d characters, above %d" % (len(text), limit))
            return None
        try:
            payload = loads(text)
        except ValueError as exc:
            self._poison(queue, text, "not JSON: %s" % exc)
            return None
        problem = _envelope_problem(payload)
        if problem is None:
            try:
                self.Message(payload, channel=self)  # what kombu builds on delivery
            except Exception as exc:  # noqa: BLE001 - whatever kombu trips on
                problem = "kombu cannot read it: %s: %s" % (type(exc).__name__, exc)
        if problem is not None:
            self._poison(queue, text, problem)
            return None
        return payload

    def _poison(self, queue: str, text: str, reason: str) -> None:
        record = json.dumps({"queue": queue, "reason": reason, "size": len(text),
                             "time": time.time(), "entry": text[:SAMPLE],
                             "truncated": len(text) > SAMPLE})
        key = getattr(self, "global_keyprefix", "") + POISON
        try:
            with self.conn_or_acquire() as client:
                client.pipeline().lpush(key, record).ltrim(key, 0, KEEP - 1).execute()
            where = "moved to %s" % key
        except self.connection_errors as exc:
            where = "dropped, %s unreachable: %s" % (key, exc)
        LOG.error("undecodable entry in queue %s refused (%s), %s: %s", queue, reason, where,
                  json.dumps(text[:200]), extra={FIELDS: {
                      "queue": queue, "outcome": "refused", "reason": "undecodable"}})
        from tasks import metrics
        metrics.refused(queue, "undecodable")


def _limit() -> int:
    """An envelope's longest text: the body limit, base64'd, plus headers."""
    from tasks.config import settings
    return settings().broker.max_message_bytes * 4 // 3 + 65536


class Transport(kombu_redis.Transport):
    Channel = Channel
