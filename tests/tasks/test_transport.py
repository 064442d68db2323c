"""The Redis transport on a private redis-server: visibility by the server's clock."""

import subprocess
import sys
import time
from typing import Any, List

import pytest
import redis
from kombu import Connection, Queue
from kombu.asynchronous import Hub
from kombu.transport import redis as kombu_redis

from tasks.transport import sweep_options

from tests.servers.redis import RedisServer

TRANSPORT = "tasks.transport:Transport"


def _connection(server: RedisServer, visibility: int) -> Connection:
    """The transport with the options celeryconfig.py gives it for this timeout."""
    return Connection(server.url, transport=TRANSPORT,
                      transport_options=dict(sweep_options(visibility),
                                             visibility_timeout=visibility))


def _restore(server: RedisServer, visibility: int) -> None:
    with _connection(server, visibility) as conn:
        conn.default_channel.qos.restore_visible(interval=1)


def test_a_worker_host_ahead_does_not_take_what_another_still_runs(
        broker: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker A (right clock) holds a message unacknowledged; worker B, whose clock is
    5 minutes ahead, looks for deliveries older than a 60 s visibility timeout. kombu's
    own QoS compared A's delivery time with B's clock and delivered the message again."""
    client = redis.Redis.from_url(broker.url)
    with _connection(broker, 60) as holder:
        queue = holder.SimpleQueue("skewed")
        queue.put({"vm": 1})
        held = queue.get(timeout=5)
        (tag, score), = client.zrange("unacked_index", 0, -1, withscores=True)
        seconds, micros = client.time()
        assert abs(score - (seconds + micros / 1e6)) < 2, "dated by the server's clock"
        ahead = time.time() + 300
        monkeypatch.setattr(kombu_redis, "time", lambda: ahead)
        monkeypatch.setattr(time, "time", lambda: ahead)
        _restore(broker, 60)
        assert client.llen("skewed") == 0, "a 5-minute-ahead worker restored a live delivery"
        monkeypatch.undo()
        time.sleep(1.5)
        _restore(broker, 1)
        assert client.llen("skewed") == 1, "past the timeout by the server's clock: restored"
        held.ack()
        queue.close()


HOLDER = """
import sys, time
from kombu import Connection
with Connection(sys.argv[1], transport=%r,
                transport_options={"visibility_timeout": int(sys.argv[2])}) as conn:
    queue = conn.SimpleQueue("held")
    queue.get(timeout=10)
    print("held", flush=True)
    time.sleep(600)
""" % TRANSPORT


def test_a_killed_workers_message_is_back_soon_after_its_visibility_timeout(
        broker: RedisServer) -> None:
    """A consumer takes a message and is SIGKILLed; a second one consuming as a Celery
    worker does (kombu's event loop, which sweeps for dead deliveries on a timer) gets
    it back within the timeout and two sweeps. With kombu's own sweep (every 100 s)
    this took up to 100 s past a 5 s timeout: the chaos runs' stalls."""
    visibility = 5
    with _connection(broker, visibility) as conn:
        conn.SimpleQueue("held").put({"vm": 1})
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, broker.url, str(visibility)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    finally:
        holder.kill()
        holder.wait(10)
    killed = time.monotonic()
    got: List[Any] = []
    hub = Hub()
    try:
        with _connection(broker, visibility) as conn:
            conn.transport.register_with_event_loop(conn.connection, hub)
            consumer = conn.Consumer([Queue("held")], accept=["json"],
                                     callbacks=[lambda body, message: got.append(body)])
            with consumer:
                while not got and time.monotonic() - killed < visibility + 60:
                    hub.run_once()
        waited = time.monotonic() - killed
    finally:
        hub.close()
    assert got == [{"vm": 1}], "the dead consumer's message never came back"
    sweep = sweep_options(visibility)["unacked_restore_interval"]
    assert waited <= visibility + 2 * sweep + 3, \
        "back %.1f s after the kill; timeout %d s, sweep every %d s" % (waited, visibility, sweep)
