"""Broker down: hook calls while the broker is away, the backlog's drain once it is back, 0 lost.

A private Redis broker (append-only file on, as a production broker would keep
its queues across a restart) and a real relay process (``novahooks relay``).
Three phases, hook calls made in this process exactly as nova-compute makes
them (``BuildInstanceHook.post('active', ...)``), one new instance per call:

1. broker up: ``--events`` calls while the relay publishes;
2. broker stopped (SIGTERM): ``--events`` calls while the relay fails and backs
   off; the outbox keeps every event;
3. broker started again on the same port: the outbox depth is sampled until
   it is empty; drain rate = backlog / (empty - first event published).

Then every message in the ``dns`` queue (each build chain's first task) is
decoded and its instance UUID matched against the calls made: lost = calls
whose event is not there. Prints ``down_p99_ratio=R`` (hook p99 with the broker
down over up; target ~1) and ``lost=L``. Run with the project's .venv::

    .venv/bin/python bench/broker_down.py [--events 2000]
"""

import base64
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chaos import chaos_vms  # noqa: E402
from bench.common import (FIRST_QUEUE, arguments, at_least, cleanup, exit_on_sigterm, latency, log,  # noqa: E402
                          ratio, save, table)
from tests.servers.base import Process, free_port, wait_for  # noqa: E402


class Broker(object):
    """redis-server on a fixed port with an append-only file, stopped and started again."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.proc = None  # type: Optional[Process]

    def _pong(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / "redis.log"
        self.proc = Process("redis", [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.workdir)],
            log_path, cwd=self.workdir)
        wait_for(self._pong, 15, "redis", self.proc.proc, log_path)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(signal.SIGTERM, timeout=20)  # SIGTERM: redis writes its AOF out
            self.proc = None


def fire(hook: Any, vms: List[Any]) -> List[float]:
    """One build_instance post-hook call per VM, as nova-compute makes it; seconds each."""
    from tasks.simulate import instance, network_info
    times = []
    for vm in vms:
        inst = instance(vm, "active", nw=network_info(vm))
        args = (object(), object(), inst, {}, object(), {}, None, [], None, None, None,
                "node1", None, None, None)
        t0 = time.perf_counter()
        hook.post("active", *args)
        times.append(time.perf_counter() - t0)
    return times


def queued_uuids(client: Any, queue: str = FIRST_QUEUE) -> List[str]:
    """The instance UUID of every chain message waiting in ``queue``."""
    uuids = []
    for raw in client.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        uuids.append(args[0]["uuid"])
    return uuids


def wait_empty(outbox: Any, timeout: float, samples: List[Dict[str, float]],
               started: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        depth = outbox.depth()[0]
        samples.append({"t": round(time.time() - started, 3), "outbox": depth})
        if depth == 0:
            return time.time()
        time.sleep(0.05)
    raise SystemExit("the outbox still holds %d events after %.0f s" % (depth, timeout))


def main(argv: Optional[List[str]] = None) -> int:
    parser = arguments("broker_down", __doc__, default_timeout=300.0,
                       timeout="seconds to wait for the outbox to empty (default 300)")
    parser.add_argument("--events", type=at_least(10), default=2000,
                        help="hook calls per phase (default 2000)")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="novahooks-bench-broker-down-"))
    broker = Broker(workdir / "redis")
    relay = None  # type: Optional[Process]
    ok = False
    try:
        broker.start()
        config = workdir / "novahooks.conf"
        config.write_text("[broker]\nurl = %s\nconnect_timeout = 1\n[outbox]\npath = %s\n"
                          "[relay]\npoll_interval = 0.05\n"
                          % (broker.url, workdir / "outbox.sqlite"))
        os.environ["NOVAHOOKS_CONFIG"] = str(config)
        import redis
        from novahooks.nova import hooks
        from novahooks.nova.outbox import Outbox
        hooks.reset_outbox()
        outbox = Outbox(str(workdir / "outbox.sqlite"))
        relay = Process("relay", [sys.executable, "-m", "novahooks.cli", "relay"],
                        workdir / "relay.log", env={"NOVAHOOKS_CONFIG": str(config)},
                        cwd=Path(__file__).resolve().parent.parent)
        hook = hooks.BuildInstanceHook()
        vms = chaos_vms(2 * args.events + 20, prefix="down", first_octet=0)
        fire(hook, vms[:20])  # warm: the outbox file, the relay's first publish
        wait_empty(outbox, args.timeout, [], time.time())

        log("broker up: %d hook calls" % args.events)
        up = fire(hook, vms[20:20 + args.events])
        wait_empty(outbox, args.timeout, [], time.time())

        log("broker down: %d hook calls" % args.events)
        broker.stop()
        down = fire(hook, vms[20 + args.events:])
        backlog = outbox.depth()[0]
        log("outbox holds %d events; starting the broker again" % backlog)
        time.sleep(1.0)  # let the relay fail and back off, as it would in an outage
        samples = []  # type: List[Dict[str, float]]
        restarted = time.time()
        broker.start()
        emptied = wait_empty(outbox, args.timeout, samples, restarted)
        first = next((s["t"] for s in samples if s["outbox"] < backlog), 0.0)
        drain_seconds = (emptied - restarted) - first
        client = redis.Redis.from_url(broker.url)
        queued = queued_uuids(client)
        fired: Set[str] = {vm.uuid for vm in vms}
        lost = len(fired - set(queued))
        duplicated = len(queued) - len(set(queued))
        ok = lost == 0
    finally:
        if relay is not None:
            relay.stop(signal.SIGINT)
        broker.stop()
        cleanup(workdir, ok)
    stats = {"up": latency(up), "down": latency(down)}
    print(table(("hook call (build_instance post)", "calls", "p50 ms", "p99 ms", "max ms"),
                [("broker up, relay publishing", len(up), stats["up"]["p50_ms"],
                  stats["up"]["p99_ms"], stats["up"]["max_ms"]),
                 ("broker down, relay backing off", len(down), stats["down"]["p50_ms"],
                  stats["down"]["p99_ms"], stats["down"]["max_ms"])]))
    drain_rate = backlog / drain_seconds if drain_seconds > 0 else float("inf")
    print("backlog=%d first_publish_after_restart_s=%.2f drain_s=%.2f drain_rate=%.0f events/s"
          % (backlog, first, drain_seconds, drain_rate))
    print("queued=%d fired=%d duplicated=%d" % (len(queued), len(fired), duplicated))
    down_ratio = ratio(stats["down"]["p99_ms"], stats["up"]["p99_ms"])
    print("down_p99_ratio=%.2f" % down_ratio)
    print("lost=%d" % lost)
    path = save("broker_down", {"hook": stats, "backlog": backlog, "drain_seconds": drain_seconds,
                                "first_publish_after_restart_s": first, "drain_rate": drain_rate,
                                "lost": lost, "duplicated": duplicated, "queued": len(queued),
                                "down_p99_ratio": down_ratio, "outbox_samples": samples},
                args.json)
    log("results in %s" % path)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
