"""A private Redis on a free loopback port, never the machine's shared one.

Celery broker and result tests flush and fill their database; a private,
non-persistent server keeps that away from anything else on the machine.
"""

import socket
from pathlib import Path

from tests.servers.base import Process, free_port, wait_for


def _pong(port: int) -> bool:
    """True once Redis answers PING, not merely accepts connections."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


class RedisServer:
    """A running redis-server; stop it with `stop()` or by leaving a `with` block."""

    def __init__(self, process: Process, port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> "RedisServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis(workdir: Path, timeout: float = 10.0) -> RedisServer:
    """Start redis-server without persistence, its files and log in `workdir`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "redis.log"
    process = Process("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                      log, cwd=workdir)
    try:
        wait_for(lambda: _pong(port), timeout, "redis", process.proc, log)
    except BaseException:
        process.stop()
        raise
    return RedisServer(process, port)
