"""A private BIND primary that accepts TSIG-signed dynamic updates (RFC 2136).

The DNS backend must be tested against a real server's rules: signatures,
zone boundaries and refusals of unsigned updates, which a mock would not check.
"""

import base64
import secrets
import socket
import subprocess
from pathlib import Path
from typing import Sequence, Tuple

from tests.servers.base import Process, Server, ServerError, free_port

KEY_ALGORITHM = "hmac-sha256"


class BindServer(Server):
    """Connection facts of a running named; `stop()` or a `with` block ends it."""

    host = "127.0.0.1"
    key_algorithm = KEY_ALGORITHM

    def __init__(self, process: Process, port: int, forward_zone: str,
                 reverse_zones: Tuple[str, ...], key_name: str, key_secret: str) -> None:
        self.process = process
        self.port = port
        self.forward_zone = forward_zone
        self.reverse_zones = reverse_zones
        self.key_name = key_name
        self.key_secret = key_secret

    @property
    def zones(self) -> Tuple[str, ...]:
        return (self.forward_zone,) + self.reverse_zones


def free_udp_tcp_port(attempts: int = 50) -> int:
    """A loopback port free for both TCP and UDP, since DNS serves on both."""
    for _ in range(attempts):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise ServerError("no loopback port free for both TCP and UDP")


def _zone_file(zone: str, forward_zone: str) -> str:
    ns = f"ns1.{forward_zone}."
    text = (f"$TTL 300\n@ IN SOA {ns} hostmaster.{forward_zone}. 1 3600 600 86400 300\n"
            f"@ IN NS {ns}\n")
    if zone == forward_zone:
        text += "ns1 IN A 127.0.0.1\n"
    return text


def _named_conf(workdir: Path, port: int, zones: Sequence[str], key_name: str,
                key_secret: str) -> str:
    parts = [
        f'key "{key_name}" {{ algorithm {KEY_ALGORITHM}; secret "{key_secret}"; }};',
        f'options {{ directory "{workdir}"; pid-file "{workdir}/named.pid";'
        f' session-keyfile "{workdir}/session.key"; managed-keys-directory "{workdir}";'
        f" listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};"
        " recursion no; notify no; dnssec-validation no;"
        # zone transfers (the whole zone, every VM's name) only signed with the key
        f' allow-transfer {{ key "{key_name}"; }}; }};',
        # An empty controls statement stops named from opening rndc's port 953.
        "controls { };",
    ]
    parts += [f'zone "{zone}" {{ type primary; file "db.{zone}";'
              f" update-policy {{ grant {key_name} zonesub ANY; }}; }};" for zone in zones]
    return "\n".join(parts) + "\n"


def _zones_answer(port: int, zones: Sequence[str]) -> bool:
    """True once every zone's SOA is served authoritatively (zones load after listening)."""
    args = ["dig", "+tcp", "+norec", "+short", "+tries=1", "+time=1", "-p", str(port),
            "@127.0.0.1"]
    for zone in zones:
        args += [zone, "SOA"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=5).stdout
    return len([line for line in out.splitlines() if line.strip()]) == len(zones)


def start_bind(workdir: Path, forward_zone: str = "cloud.example.test",
               reverse_zones: Sequence[str] = ("10.in-addr.arpa", "168.192.in-addr.arpa",
                                               "8.b.d.0.1.0.0.2.ip6.arpa"),
               key_name: str = "novahooks-key", timeout: float = 15.0) -> BindServer:
    """Write named.conf and zone files into `workdir` and run ``named -g`` there.

    named stays root (no ``-u``): it only binds a high loopback port and writes
    journals into `workdir`. Every zone accepts updates signed with one fresh
    random TSIG key, the only credential the DNS backend gets.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    zones = (forward_zone,) + tuple(reverse_zones)
    for zone in zones:
        (workdir / f"db.{zone}").write_text(_zone_file(zone, forward_zone))
    key_secret = base64.b64encode(secrets.token_bytes(32)).decode()
    port = free_udp_tcp_port()
    conf = workdir / "named.conf"
    conf.write_text(_named_conf(workdir, port, zones, key_name, key_secret))
    log = workdir / "named.log"
    process = Process("named", ["named", "-g", "-c", str(conf)], log, cwd=workdir)
    server = BindServer(process, port, forward_zone, tuple(reverse_zones), key_name, key_secret)
    return server.ready(lambda: _zones_answer(port, zones), timeout, "named", log)
