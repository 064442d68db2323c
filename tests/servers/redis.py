"""A private Redis on a free loopback port, never the machine's shared one.

Celery broker and result tests flush and fill their database; a private,
non-persistent server keeps that away from anything else on the machine.
With a password (the stack's broker) it is started with ``requirepass``, as a
production broker must be: whoever reaches an open broker runs the pipeline.
"""

import socket
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from tests.servers.base import Process, Server, free_port


def _pong(port: int, password: Optional[str] = None) -> bool:
    """True once Redis answers PING (after AUTH), not merely accepts connections."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        if password:
            secret = password.encode()
            sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
            if not sock.recv(64).startswith(b"+OK"):
                return False
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


class RedisServer(Server):
    """A running redis-server; stop it with `stop()` or by leaving a `with` block."""

    def __init__(self, process: Process, port: int, password: Optional[str] = None) -> None:
        self.process = process
        self.port = port
        self.password = password
        #: without the password, as [broker] url is written (the password goes in a file)
        self.address_url = f"redis://127.0.0.1:{port}/0"
        #: with it, for clients (redis.Redis.from_url, kombu) in tests
        self.url = self.address_url if not password else \
            f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0"


def start_redis(workdir: Path, timeout: float = 10.0,
                password: Optional[str] = None) -> RedisServer:
    """Start redis-server without persistence, its files and log in `workdir`;
    with ``password``, clients must AUTH (``requirepass``)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "redis.log"
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(workdir)]
    if password:
        # in a config file of its own (mode 0600), not on the command line ps shows
        conf = workdir / "auth.conf"
        conf.write_text("requirepass %s\n" % password)
        conf.chmod(0o600)
        argv.insert(1, str(conf))
    process = Process("redis", argv, log, cwd=workdir)
    return RedisServer(process, port, password).ready(lambda: _pong(port, password), timeout,
                                                      "redis", log)
