"""The Redis transport on a private redis-server: visibility by the server's clock."""

import time
import pytest
import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis

from tests.servers.redis import RedisServer

TRANSPORT = "tasks.transport:Transport"


def _connection(server: RedisServer, visibility: float) -> Connection:
    return Connection(server.url, transport=TRANSPORT,
                      transport_options={"visibility_timeout": visibility})


def _restore(server: RedisServer, visibility: float) -> None:
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
