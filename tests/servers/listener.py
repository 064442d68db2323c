"""``novahooks listen`` as a process of its own on a RabbitMQ vhost, for tests.

A listener is run the way an operator runs it (the CLI, a configuration file, the
password from the environment) and read back through its JSON log, one file per
run, so a test that kills and restarts it can tell the runs apart.
"""

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from tests.servers.base import Process, wait_for
from tests.servers.rabbitmq import RabbitVhost

ROOT = Path(__file__).resolve().parents[2]


def listener_config(base: Path, workdir: Path, vhost: RabbitVhost, pool: str) -> Path:
    """``base`` (a stack's configuration) plus a ``[notifications]`` section for ``vhost``."""
    config = workdir / "novahooks.conf"
    config.write_text(base.read_text() + "\n[notifications]\n"
                      "transport_url = rabbit://guest@127.0.0.1:5672/%s\npool = %s\n"
                      % (vhost.name, pool))
    return config


class ListenerProcess(object):
    def __init__(self, vhost: RabbitVhost, config: Path, logs: Path, pool: str) -> None:
        self.vhost = vhost
        self.config = config
        self.logs = logs
        #: The listener's queue ([notifications] pool).
        self.pool = pool
        self.runs = 0
        self.proc: Optional[Process] = None

    def start(self) -> None:
        """Start one more run and wait until it consumes from its queue."""
        self.runs += 1
        env = dict(os.environ, NOVAHOOKS_CONFIG=str(self.config),
                   NOVAHOOKS_NOTIFICATIONS_PASSWORD="guest")
        proc = self.proc = Process("listener", [sys.executable, "-m", "novahooks.cli", "listen"],
                                   self.log(), env=env, cwd=ROOT)
        wait_for(lambda: "listening on" in self.text(), 60, "listener started", proc.proc,
                 self.log())
        wait_for(lambda: any(q["name"] == self.pool and q.get("consumers", 0) >= 1
                             for q in self.vhost.list_queues("name", "consumers")),
                 30, "listener consuming", proc.proc, self.log())

    def log(self, run: Optional[int] = None) -> Path:
        return self.logs / ("listener-%d.log" % (run or self.runs))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.stop(signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(signal.SIGTERM)

    def text(self, run: Optional[int] = None) -> str:
        path = self.log(run)
        return path.read_text(errors="replace") if path.exists() else ""

    def lines(self, run: Optional[int] = None) -> List[Dict[str, Any]]:
        """The run's log lines about one notification each (those with an ``outcome``)."""
        rows = []
        for line in self.text(run).splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("outcome"):
                rows.append(row)
        return rows

    def all_lines(self) -> List[Dict[str, Any]]:
        return [row for run in range(1, self.runs + 1) for row in self.lines(run)]

    def ready(self) -> int:
        """Messages waiting in the listener's queue (cheaper than rabbitmqctl: no Erlang VM)."""
        import kombu
        with kombu.Connection(self.vhost.url) as conn:
            return int(conn.default_channel.queue_declare(queue=self.pool, passive=True)
                       .message_count)

    def queued(self) -> Tuple[int, int]:
        """(ready, unacknowledged) in the listener's queue."""
        row = next(q for q in self.vhost.list_queues("name", "messages_ready",
                                                     "messages_unacknowledged")
                   if q["name"] == self.pool)
        return int(row["messages_ready"]), int(row["messages_unacknowledged"])
