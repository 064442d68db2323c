#!/usr/local/bin/python
"""Health check of the novahooks container image: cheap, standard library only.

    novahooks-healthcheck [auto|worker|relay|flower|listener]

worker  a Celery worker's main process is alive and holds an established TCP
        connection to the broker of ``[broker] url``. No broker round trip:
        ``celery -A tasks.app inspect ping -d <queue>@$HOSTNAME`` would also prove
        the consumer loop answers, but costs a Celery start-up (~1 s of CPU) and a
        broadcast through the broker every interval, in every worker container.
relay   the relay wrote its heartbeat into the outbox (table ``relays``, host =
        this container's hostname) within the last ``RELAY_MAX_AGE`` seconds; it
        writes one every 5 s while its loop runs, broker up or down.
flower  Flower answers ``/healthcheck`` on its ``--port`` (that path needs no
        credentials).
listener  ``novahooks listen`` holds an established TCP connection to a host of
        ``[notifications] transport_url`` (oslo.messaging reconnects on its own).
auto    whichever of those runs in this container (the image's HEALTHCHECK); a
        one-off CLI container has nothing to check and is healthy.

Exit status 0 healthy, 1 unhealthy, with one line saying why (``docker inspect``
shows it).
"""

import ipaddress
import os
import socket
import sqlite3
import sys
import time
import urllib.request
from typing import Iterable, List, Optional, Sequence, Set, Tuple
from urllib.parse import urlsplit

RELAY_MAX_AGE = 60.0
DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "amqp": 5672, "pyamqp": 5672, "amqps": 5671,
                 "rabbit": 5672}
_ESTABLISHED = "01"


def processes(proc: str = "/proc") -> List[Tuple[int, List[str]]]:
    """(pid, argv) of every process this container can see, lowest pid first."""
    found = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(os.path.join(proc, name, "cmdline"), "rb") as handle:
                argv = [a.decode("utf-8", "replace") for a in handle.read().split(b"\0") if a]
        except OSError:
            continue
        if argv:
            found.append((int(name), argv))
    return sorted(found)


def role_of(argv: Sequence[str]) -> Optional[str]:
    """worker, flower or relay for a novahooks process; None for anything else.

    Only the program itself counts, not an init that runs it (``init: true`` makes
    ``docker-init -- celery ... worker`` pid 1, holding no socket of its own).
    """
    if not argv:
        return None
    program, args = os.path.basename(argv[0]), list(argv[1:])
    if program.startswith("python"):
        if args[:1] == ["-m"] and len(args) > 1:
            program, args = args[1], args[2:]
        elif args and not args[0].startswith("-"):
            program, args = os.path.basename(args[0]), args[1:]
        else:
            return None
    if program == "celery":
        if "worker" in args:
            return "worker"
        if "flower" in args:
            return "flower"
    if program in ("novahooks", "novahooks.cli") and "relay" in args:
        return "relay"
    if program in ("novahooks", "novahooks.cli") and "listen" in args:
        return "listener"
    return None


def _socket_inodes(pid: int, proc: str = "/proc") -> Set[str]:
    inodes = set()
    fd_dir = os.path.join(proc, str(pid), "fd")
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _address(field: str) -> Tuple[str, int]:
    """Decode /proc/net/tcp{,6}'s ``HEXADDR:HEXPORT`` (addresses in host byte order)."""
    hexaddr, hexport = field.split(":")
    raw = bytes.fromhex(hexaddr)
    packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(packed)
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address), int(hexport, 16)


def established_peers(pid: int, proc: str = "/proc") -> List[Tuple[str, int]]:
    """Remote (address, port) of every established TCP connection `pid` holds."""
    mine = _socket_inodes(pid, proc)
    peers = []
    for table in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc, str(pid), "net", table)) as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _ESTABLISHED and fields[9] in mine:
                peers.append(_address(fields[2]))
    return peers


def broker_endpoint(url: str) -> Tuple[str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return parts.hostname or "localhost", parts.port or DEFAULT_PORTS.get(scheme, 6379)


def resolve(host: str, port: int) -> Set[str]:
    addresses = set()
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        addresses.add(str(address))
    return addresses


def check_worker(pid: int, broker_url: str, proc: str = "/proc") -> Tuple[bool, str]:
    host, port = broker_endpoint(broker_url)
    try:
        wanted = resolve(host, port)
    except OSError as exc:
        return False, "broker host %s does not resolve: %s" % (host, exc)
    peers = established_peers(pid, proc)
    if any(p == port and a in wanted for a, p in peers):
        return True, "worker %d connected to the broker %s:%d" % (pid, host, port)
    return False, "worker %d has no connection to the broker %s:%d" % (pid, host, port)


def check_relay(outbox_path: str, hostname: Optional[str] = None,
                max_age: float = RELAY_MAX_AGE, now: Optional[float] = None) -> Tuple[bool, str]:
    hostname = hostname or socket.gethostname()
    if not os.path.exists(outbox_path):
        return False, "no outbox at %s yet" % outbox_path
    try:
        conn = sqlite3.connect(outbox_path, timeout=2.0)
        try:
            row = conn.execute("SELECT MAX(seen_at) FROM relays WHERE host = ?",
                               (hostname,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return False, "cannot read the relay heartbeat in %s: %s" % (outbox_path, exc)
    seen = row[0] if row else None
    if seen is None:
        return False, "no relay heartbeat from %s in %s" % (hostname, outbox_path)
    age = (time.time() if now is None else now) - seen
    if age > max_age:
        return False, "last relay heartbeat %.0f s ago" % age
    return True, "relay heartbeat %.0f s ago" % age


def check_listener(pid: int, transport_url: str, proc: str = "/proc") -> Tuple[bool, str]:
    """Connected to any host of an oslo.messaging URL (``rabbit://u@h1:5672,u@h2:5672/``)."""
    peers = established_peers(pid, proc)
    scheme = urlsplit(transport_url).scheme.lower()
    hosts = []
    for netloc in urlsplit(transport_url).netloc.split(","):
        parts = urlsplit("//" + netloc)
        host, port = parts.hostname or "localhost", parts.port or DEFAULT_PORTS.get(scheme, 5672)
        hosts.append("%s:%d" % (host, port))
        try:
            wanted = resolve(host, port)
        except OSError:
            continue
        if any(p == port and a in wanted for a, p in peers):
            return True, "listener %d connected to %s:%d" % (pid, host, port)
    return False, "listener %d has no connection to %s" % (pid, ", ".join(hosts))


def flower_port(argv: Iterable[str]) -> int:
    args = list(argv)
    for i, arg in enumerate(args):
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
        if arg == "--port" and i + 1 < len(args):
            return int(args[i + 1])
    return int(os.environ.get("FLOWER_PORT", "5555"))


def check_flower(port: int, timeout: float = 5.0) -> Tuple[bool, str]:
    url = "http://127.0.0.1:%d/healthcheck" % port
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(64).strip()
            if response.status == 200 and body == b"OK":
                return True, "flower answers on %d" % port
            return False, "flower answered %d %r" % (response.status, body)
    except OSError as exc:
        return False, "flower does not answer on %d: %s" % (port, exc)


def main(argv: Sequence[str]) -> int:
    wanted = argv[0] if argv else "auto"
    if wanted not in ("auto", "worker", "relay", "flower", "listener"):
        print("usage: novahooks-healthcheck [auto|worker|relay|flower|listener]",
              file=sys.stderr)
        return 2
    running = [(pid, args, role_of(args)) for pid, args in processes()]
    running = [item for item in running if item[2] is not None]
    if wanted != "auto":
        running = [item for item in running if item[2] == wanted]
        if not running:
            print("unhealthy: no %s process" % wanted)
            return 1
    elif not running:
        print("healthy: no long-running novahooks process here (one-off command)")
        return 0
    pid, args, role = running[0]  # lowest pid: a pool's main process, not a child
    if role == "flower":
        ok, why = check_flower(flower_port(args))
    else:
        from novahooks.settings import load_settings
        settings = load_settings()
        if role == "worker":
            ok, why = check_worker(pid, settings.broker.url)
        elif role == "listener":
            ok, why = check_listener(pid, settings.notifications.transport_url)
        else:
            ok, why = check_relay(settings.outbox.path)
    print("%s: %s" % ("healthy" if ok else "unhealthy", why))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
