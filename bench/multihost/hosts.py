"""Several hosts on one machine: network namespaces joined by veth pairs on one bridge.

The layout a deployment has, with names and addresses per host (loopback range
only, 127.77.0.0/24, which this machine's other work never uses)::

    host        address       runs
    svc         127.77.0.10   RabbitMQ, PostgreSQL (the ledger), NetBox, slapd, BIND
    compute1    127.77.0.21   nova-compute's hooks (the simulator), outbox, relay
    compute2    127.77.0.22   the same, its own outbox and relay
    worker1     127.77.0.31   every step's worker pool
    worker2     127.77.0.32   every step's worker pool

Each host is a namespace ``nh-<host>`` whose ``eth0`` is one end of a veth pair;
the other ends sit on a bridge in the namespace ``nh-lan``, the switch. Every
host's ``/etc/hosts`` (``/etc/netns/nh-<host>/hosts``, which ``ip netns exec``
puts in place) names all of them ``<host>.nh.test``.

The svc host's servers are the machine's own (RabbitMQ, PostgreSQL) and the
bench's (NetBox, slapd, BIND, started on 127.0.0.1 as for the suite): a router
process owns the svc host's listening sockets, made inside its namespace, and
relays each connection to the real server. A fault on a service is a fault of
that route: ``block`` closes its listener and drops every connection through it,
which is what a client sees of a stopped server or a dead host.

    python bench/multihost/hosts.py up       # namespaces, veths, bridge, /etc/hosts
    python bench/multihost/hosts.py status
    python bench/multihost/hosts.py down     # removes all of it (also after a crash)

bench/multihost/faults.py and tests/bench/test_multihost.py start and stop it
through :class:`Hosts`, this same code.
"""

import argparse
import ctypes
import os
import selectors
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

PREFIX = "nh-"
LAN = PREFIX + "lan"
BRIDGE = "nhbr0"
NET = "127.77.0"
DOMAIN = "nh.test"
#: host -> last octet of its address
HOSTS: Dict[str, int] = {"svc": 10, "compute1": 21, "compute2": 22,
                         "worker1": 31, "worker2": 32}
CLONE_NEWNET = 0x40000000


def namespace(host: str) -> str:
    return PREFIX + host


def address(host: str) -> str:
    return "%s.%d" % (NET, HOSTS[host])


def fqdn(host: str) -> str:
    return "%s.%s" % (host, DOMAIN)


def _port(host: str) -> str:
    """The switch's port for ``host`` (the LAN end of its veth pair)."""
    return "nhp-%s" % host[:9]


def _ip(*args: str, ns: Optional[str] = None, check: bool = True) -> str:
    argv = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    if check and result.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(argv), result.stderr.strip()))
    return result.stdout


class Hosts(object):
    """The namespaces, their links and their names: up, down, cut a link, mend it."""

    def __init__(self, hosts: Sequence[str] = tuple(HOSTS)) -> None:
        self.hosts = list(hosts)

    def up(self) -> "Hosts":
        self.down()  # whatever a crashed run left
        _ip("ip", "netns", "add", LAN)
        _ip("ip", "link", "add", BRIDGE, "type", "bridge", ns=LAN)
        _ip("ip", "link", "set", BRIDGE, "up", ns=LAN)
        names = "".join("%s %s %s\n" % (address(h), fqdn(h), h) for h in self.hosts)
        for host in self.hosts:
            ns = namespace(host)
            _ip("ip", "netns", "add", ns)
            port = _port(host)
            _ip("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name",
                port, "netns", LAN)
            _ip("ip", "link", "set", port, "master", BRIDGE, ns=LAN)
            _ip("ip", "link", "set", port, "up", ns=LAN)
            # 127/8 on an interface other than lo: the kernel routes it only with this
            _ip("sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1", ns=ns)
            _ip("ip", "link", "set", "lo", "up", ns=ns)
            _ip("ip", "addr", "add", "%s/24" % address(host), "dev", "eth0", ns=ns)
            _ip("ip", "link", "set", "eth0", "up", ns=ns)
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text("127.0.0.1 localhost\n" + names)
            (etc / "hostname").write_text(fqdn(host) + "\n")
        return self

    def down(self) -> None:
        listed = _ip("ip", "netns", "list", check=False)
        present = {line.split()[0] for line in listed.splitlines() if line.strip()}
        for ns in [namespace(h) for h in HOSTS] + [LAN]:
            if ns in present:
                self.kill_all(ns)
                _ip("ip", "netns", "del", ns, check=False)
            etc = Path("/etc/netns") / ns
            for name in ("hosts", "hostname"):
                if (etc / name).exists():
                    (etc / name).unlink()
            if etc.exists():
                etc.rmdir()

    @staticmethod
    def pids(ns: str) -> List[int]:
        out = _ip("ip", "netns", "pids", ns, check=False)
        return [int(p) for p in out.split()]

    def kill_all(self, ns: str, sig: int = 9) -> List[int]:
        """SIGKILL every process of a host: the host lost as a whole."""
        pids = self.pids(ns)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return pids

    def link(self, host: str, up: bool) -> None:
        """The host's cable, pulled at the switch: what it sends is lost without a word
        (no reset, no refusal), as when a cable or a top-of-rack port dies."""
        _ip("ip", "link", "set", _port(host), "up" if up else "down", ns=LAN)

    def blackhole(self, host: str, to: str, on: bool) -> None:
        """Drop what ``host`` sends to one address (one service's route, not the cable)."""
        _ip("ip", "route", "add" if on else "del", "blackhole", "%s/32" % to,
            ns=namespace(host), check=on)

    def argv(self, host: str, argv: Sequence[str]) -> List[str]:
        """A command line that runs on ``host``."""
        return ["ip", "netns", "exec", namespace(host)] + list(argv)

    def status(self) -> str:
        lines = []
        for host in self.hosts:
            ns = namespace(host)
            state = _ip("ip", "-br", "addr", "show", "eth0", ns=ns, check=False).strip()
            lines.append("%-9s %-13s %-18s %s processes; %s" % (
                host, address(host), fqdn(host), len(self.pids(ns)), state or "absent"))
        return "\n".join(lines)


# --------------------------------------------------------------------------- the router

def _enter(path: str) -> None:
    """Move the calling thread into the network namespace at ``path``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns %s" % path)
    finally:
        os.close(fd)


class Route(object):
    """One service of the svc host: its listening socket there, its server here."""

    def __init__(self, name: str, ns: str, listen: Tuple[str, int],
                 target: Tuple[str, int]) -> None:
        self.name = name
        self.ns = ns
        self.listen = listen
        self.target = target
        self.sock: Optional[socket.socket] = None
        self.conns: List[socket.socket] = []


def _listener_in(ns: str, listen: Tuple[str, int]) -> socket.socket:
    """A listening socket made inside namespace ``ns`` (by a thread that enters it, so
    this one stays where it is); it keeps that namespace whoever uses it later."""
    result: List[object] = []

    def make() -> None:
        try:
            _enter("/var/run/netns/%s" % ns)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(listen)
            sock.listen(128)
            sock.setblocking(False)
            result.append(sock)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            result.append(exc)
    maker = threading.Thread(target=make)
    maker.start()
    maker.join()
    if isinstance(result[0], Exception):
        raise result[0]
    return result[0]  # type: ignore[return-value]


class Router(threading.Thread):
    """The svc host's servers, as its clients reach them.

    Listening sockets live in the svc namespace; connections to the real servers are
    made from the machine's own. One thread and one selector relay every byte; block
    and unblock are handed to that thread, which alone touches the sockets.
    """

    def __init__(self, host: str = "svc") -> None:
        super().__init__(name="nh-router", daemon=True)
        self.host = host
        self.routes: Dict[str, Route] = {}
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._commands: List[Tuple[str, Route, Optional[socket.socket]]] = []
        self._lock = threading.Lock()
        self._stopped = False
        self._pipes: Dict[socket.socket, Tuple[socket.socket, Route]] = {}

    def add(self, name: str, port: int, target_port: int, target_host: str = "127.0.0.1",
            on: Optional[str] = None, listen_host: Optional[str] = None) -> None:
        """Serve ``target`` at ``listen_host:port`` on host ``on`` (default: this svc host
        at its own address)."""
        host = on or self.host
        route = Route(name, namespace(host), (listen_host or address(host), port),
                      (target_host, target_port))
        self.routes[name] = route
        self.unblock(name)

    def block(self, name: str) -> None:
        """The service is gone: its port refuses, every connection through it drops."""
        self._command("block", self.routes[name], None)

    def unblock(self, name: str) -> None:
        route = self.routes[name]
        self._command("listen", route, _listener_in(route.ns, route.listen))

    def _command(self, what: str, route: Route, sock: Optional[socket.socket]) -> None:
        with self._lock:
            self._commands.append((what, route, sock))
        self._wake_w.send(b"x")

    def run(self) -> None:
        while not self._stopped:
            for key, _ in self.selector.select(1.0):
                kind, route = key.data
                if kind == "wake":
                    try:
                        self._wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                    self._apply()
                elif kind == "listen":
                    self._accept(key.fileobj, route)  # type: ignore[arg-type]
                elif key.fileobj in self._pipes:
                    self._pump(key.fileobj)  # type: ignore[arg-type]
        for route in self.routes.values():
            self._close_route(route)

    def _apply(self) -> None:
        with self._lock:
            commands, self._commands = self._commands, []
        for what, route, sock in commands:
            if what == "listen" and sock is not None:
                if route.sock is not None:
                    sock.close()
                    continue
                route.sock = sock
                self.selector.register(sock, selectors.EVENT_READ, ("listen", route))
            elif what == "block":
                self._close_route(route)

    def _close_route(self, route: Route) -> None:
        if route.sock is not None:
            self.selector.unregister(route.sock)
            route.sock.close()
            route.sock = None
        for conn in list(route.conns):
            self._drop(conn)

    def _accept(self, listener: socket.socket, route: Route) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            server = socket.create_connection(route.target, timeout=5)
        except OSError:
            client.close()
            return
        for sock, peer in ((client, server), (server, client)):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pipes[sock] = (peer, route)
            route.conns.append(sock)
            self.selector.register(sock, selectors.EVENT_READ, ("pipe", route))

    def _pump(self, sock: socket.socket) -> None:
        peer, _ = self._pipes[sock]
        try:
            data = sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        try:
            peer.setblocking(True)
            peer.settimeout(30)
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        entry = self._pipes.pop(sock, None)
        if entry is None:
            return
        peer, route = entry
        for one in (sock, peer):
            self._pipes.pop(one, None)
            if one in route.conns:
                route.conns.remove(one)
            try:
                self.selector.unregister(one)
            except (KeyError, ValueError):
                pass
            try:
                one.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            one.close()

    def stop(self) -> None:
        self._stopped = True
        self._wake_w.send(b"x")
        self.join(10)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    hosts = Hosts()
    if args.action == "up":
        hosts.up()
        print(hosts.status())
    elif args.action == "down":
        hosts.down()
    else:
        print(hosts.status())
    return 0


if __name__ == "__main__":
    sys.exit(main())
