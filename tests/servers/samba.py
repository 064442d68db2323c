"""A private Samba Active Directory domain controller on its own loopback address.

The AD directory driver and AD's DNS must be proved against the real thing:
AD's schema, its checks on computer objects (sAMAccountName, SPN uniqueness,
userAccountControl), its access control and its DNS server's update rules,
none of which slapd or BIND reproduce.

Samba's LDAP, DNS, Kerberos and RPC ports are fixed (389, 636, 53, 88, 135,
...), so the domain controller gets a loopback address of its own (127.0.0.2
or the next free one) instead of a free port: ``interfaces = <addr>/8`` with
``bind interfaces only`` makes Samba listen there only, without adding an
address to ``lo``. A lock file per address keeps two test sessions on one
machine from claiming the same address. Provisioning into a fresh directory
takes a few seconds, so it is not cached.

The service account ``novahooks`` is not an administrator: it may create and
delete computer objects under ``OU=NovaVMs`` and write their properties,
nothing else, as an operator would delegate it. TLS uses the certificate
Samba generates on first start (CA in ``private/tls/ca.pem``; the server
certificate names the DC's FQDN, as real AD certificates do, so clients
verify that name rather than the address).
"""

import fcntl
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, List, Sequence, Tuple

from tests.servers.base import Process, Server, ServerError, tail, wait_for

REALM = "NOVA.TEST"
DOMAIN = "NOVA"
DC_NAME = "dc1"
OU_NAME = "NovaVMs"
SERVICE_USER = "novahooks"
# schemaIDGUIDs of the classes the service account may create (ACEs are scoped to them):
# "computer" for Windows VMs, "device" for Linux VMs' RFC 2307 host entries.
COMPUTER_CLASS_GUID = "bf967a86-0de6-11d0-a285-00aa003049e2"
DEVICE_CLASS_GUID = "bf967a8e-0de6-11d0-a285-00aa003049e2"
_TCP_PORTS = (53, 88, 135, 389, 464, 636, 3268, 3269)
_UDP_PORTS = (53, 88, 389, 464)
_LOCK_DIR = Path("/tmp")
#: Loopback addresses tried in turn (all of 127.0.0.0/8 reaches lo without configuration).
CANDIDATES = tuple("127.0.0.%d" % n for n in range(2, 64))
#: ``start_samba(smb=True)``: SMB (s3fs: smbd) too, for what speaks SMB/RPC to a DC
#: (``net offlinejoin provision``), with winbindd (smbd on a DC maps SIDs through it) and
#: cldap (net finds the DC by a CLDAP ping).
SMB_SERVICES = "ldap, cldap, dns, kdc, rpc, s3fs, winbindd"
#: smbd reaches winbindd only through the socket directory compiled into libwbclient
#: (/run/samba/winbindd; another is honoured only under Samba's selftest wrappers), so
#: one DC with SMB runs on a machine at a time: this lock says which.
_WINBINDD_LOCK = _LOCK_DIR / "novahooks-samba-winbindd.lock"


def samba_version() -> str:
    result = subprocess.run(["samba", "--version"], capture_output=True, text=True)
    if result.returncode != 0:
        raise ServerError(f"samba --version failed: {result.stderr.strip()}")
    return result.stdout.strip().split()[-1]


class SambaServer(Server):
    """Connection facts of a running Samba AD DC; `stop()` or a `with` block ends it."""

    def __init__(self, process: Process, workdir: Path, address: str, lock: IO[str],
                 admin_password: str, bind_password: str, reverse_zone: str) -> None:
        self.process = process
        self.workdir = workdir
        self.address = address
        self._lock = lock
        #: Machine-wide locks held while it runs (smb=True: winbindd's socket directory).
        self.extra_locks: List[IO[str]] = []
        self.realm = REALM
        self.domain = DOMAIN
        self.zone = REALM.lower()
        self.reverse_zone = reverse_zone
        self.base_dn = ",".join("DC=" + part for part in self.zone.split("."))
        self.dc_fqdn = f"{DC_NAME}.{self.zone}"
        self.url = f"ldap://{address}"
        self.ldaps_url = f"ldaps://{address}"
        self.admin_password = admin_password
        self.bind_dn = f"CN={SERVICE_USER},CN=Users,{self.base_dn}"
        self.bind_password = bind_password
        self.computers_ou = f"OU={OU_NAME},{self.base_dn}"
        self.smb_conf = workdir / "etc" / "smb.conf"
        self.sam_ldb = workdir / "private" / "sam.ldb"
        self.ca_file = workdir / "private" / "tls" / "ca.pem"

    def samba_tool(self, *args: str, check: bool = True) -> "subprocess.CompletedProcess[str]":
        """Run samba-tool against this DC's own database (``-H sam.ldb``)."""
        argv = ["samba-tool", *args, "-s", str(self.smb_conf), "-H", str(self.sam_ldb)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise ServerError(f"{' '.join(args)}: {result.stdout}{result.stderr}")
        return result

    def add_zone(self, zone: str) -> None:
        """Create a DNS zone through the running DC (RPC, as an administrator would)."""
        _run(["samba-tool", "dns", "zonecreate", self.address, zone, "-U", "Administrator",
              f"--password={self.admin_password}", "--use-kerberos=off",
              "-s", str(self.smb_conf)], f"dns zonecreate {zone}", timeout=60)

    def add_record(self, name: str, rdtype: str, data: str) -> None:
        """A DNS record in the domain's zone made as an administrator would (RPC), not by
        novahooks: no owner marker."""
        _run(["samba-tool", "dns", "add", self.address, self.zone, name, rdtype, data,
              "-U", "Administrator", f"--password={self.admin_password}",
              "--use-kerberos=off", "-s", str(self.smb_conf)], f"dns add {name}", timeout=60)

    def stop(self) -> None:
        try:
            self.process.stop()
        finally:
            self._lock.close()
            for extra in self.extra_locks:
                extra.close()


def _free_on(address: str) -> bool:
    """No socket (wildcard or this address) holds any port Samba needs here."""
    for kind, ports in ((socket.SOCK_STREAM, _TCP_PORTS), (socket.SOCK_DGRAM, _UDP_PORTS)):
        for port in ports:
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind((address, port))
                except OSError:
                    return False
    return True


def claim_address(candidates: Sequence[str] = CANDIDATES) -> Tuple[str, IO[str]]:
    """The first loopback address nobody else uses, locked until the lock file is closed."""
    for address in candidates:
        handle = open(_LOCK_DIR / f"novahooks-samba-{address}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        if _free_on(address):
            return address, handle
        handle.close()
    raise ServerError("samba: no free loopback address among "
                      f"{candidates[0]}..{candidates[-1]} (ports {_TCP_PORTS} in use)")


def _run(argv: List[str], what: str, timeout: float = 300) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise ServerError(f"samba: {what} failed ({result.returncode}):\n"
                          f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


def _provision(workdir: Path, address: str, admin_password: str,
               allow_dns_updates: str, services: str = "ldap, dns, kdc, rpc") -> None:
    options = {
        "interfaces": f"{address}/8",
        "bind interfaces only": "yes",
        # Only what the tests and the demo use: LDAP, DNS, Kerberos, and RPC for samba-tool dns.
        "server services": services,
        "allow dns updates": allow_dns_updates,
        "dns forwarder": address,
        "log file": str(workdir / "log.%m"),
        # Defaults are under /run/samba, shared by every Samba on the machine.
        "pid directory": str(workdir / "run"),
        "ncalrpc dir": str(workdir / "run" / "ncalrpc"),
        "rpc server dynamic port range": "49152-49252",
    }
    argv = ["samba-tool", "domain", "provision", f"--targetdir={workdir}", "--use-rfc2307",
            f"--realm={REALM}", f"--domain={DOMAIN}", "--server-role=dc",
            "--dns-backend=SAMBA_INTERNAL", f"--host-name={DC_NAME}", f"--host-ip={address}",
            f"--adminpass={admin_password}"]
    argv += [f"--option={key} = {value}" for key, value in options.items()]
    _run(argv, "domain provision")


def _delegate(server: SambaServer) -> None:
    """Create the OU and the service account, and give it computer objects there only."""
    server.samba_tool("ou", "create", server.computers_ou)
    server.samba_tool("user", "create", SERVICE_USER, server.bind_password)
    shown = server.samba_tool("user", "show", SERVICE_USER, "--attributes=objectSid").stdout
    sid = next(line.split(":", 1)[1].strip() for line in shown.splitlines()
               if line.startswith("objectSid:"))
    # CC/DC: create and delete computer and device objects in the OU (and sub-OUs);
    # inherited onto each of them: read and write its properties, list, read its security.
    sddl = "".join(f"(OA;CI;CCDC;{guid};;{sid})(OA;CIIO;RPWPLCLORC;;{guid};{sid})"
                   for guid in (COMPUTER_CLASS_GUID, DEVICE_CLASS_GUID))
    server.samba_tool("dsacl", "set", f"--objectdn={server.computers_ou}", f"--sddl={sddl}")


def _claim_winbindd(timeout: float) -> IO[str]:
    handle = open(_WINBINDD_LOCK, "w")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise ServerError("samba: another DC with SMB holds %s (winbindd's socket "
                                  "directory is machine-wide)" % _WINBINDD_LOCK) from None
            time.sleep(0.5)


def _winbindd_answers() -> bool:
    return subprocess.run(["wbinfo", "-p"], capture_output=True, timeout=10).returncode == 0


def start_samba(workdir: Path, reverse_zone: str = "2.0.10.in-addr.arpa",
                allow_dns_updates: str = "nonsecure", timeout: float = 120.0,
                smb: bool = False) -> SambaServer:
    """Provision a fresh domain in `workdir` and run Samba in the foreground.

    Ready means LDAPS answers and the reverse zone exists. `allow_dns_updates`
    is Samba's own setting: ``nonsecure`` accepts unsigned RFC 2136 updates
    (Samba's DNS verifies only GSS-TSIG, never shared-key TSIG), ``secure only``
    is Samba's default and refuses them. `smb` adds SMB_SERVICES (one such DC per
    machine at a time; ready also means winbindd answers).
    """
    workdir = Path(workdir).resolve()
    if workdir.exists() and any(workdir.iterdir()):
        raise ServerError(f"samba: {workdir} is not empty; give each server a fresh workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    extra_locks = [_claim_winbindd(timeout)] if smb else []
    address, lock = claim_address()
    admin_password = "Adm-" + secrets.token_urlsafe(16)
    bind_password = "Svc-" + secrets.token_urlsafe(16)
    try:
        _provision(workdir, address, admin_password, allow_dns_updates,
                   SMB_SERVICES if smb else "ldap, dns, kdc, rpc")
    except BaseException:
        lock.close()
        for extra in extra_locks:
            extra.close()
        raise
    log = workdir / "samba.log"
    # -i: foreground, log to stdout, no daemon; "single" keeps it to one process on a
    # shared 2-core machine. setsid by Process makes stop() reach every child.
    process = Process("samba", ["samba", "-i", "-M", "single", "-s",
                                str(workdir / "etc" / "smb.conf")], log)
    server = SambaServer(process, workdir, address, lock, admin_password, bind_password,
                         reverse_zone)
    server.extra_locks = extra_locks
    try:
        _delegate(server)
        wait_for(lambda: _tcp_open(address, 636) and _tcp_open(address, 53),
                 timeout, "samba", process.proc, log)
        wait_for(server.ca_file.exists, timeout, "samba TLS certificate", process.proc, log)
        if smb:
            wait_for(lambda: _tcp_open(address, 445) and _winbindd_answers(), timeout,
                     "samba smbd and winbindd", process.proc, log)
        server.add_zone(reverse_zone)
    except BaseException as exc:
        process.stop()
        lock.close()
        for extra in extra_locks:
            extra.close()
        if isinstance(exc, ServerError):
            raise ServerError(f"{exc}{tail(log)}") from None
        raise
    return server


def client_conf(directory: Path, server: SambaServer, netbios_name: str) -> Path:
    """An smb.conf of a Samba client of `server` (net, a guest doing requestodj) in a
    directory of its own, where it finds the DC without DNS.

    After the CLDAP ping net connects to the DC by its DNS name; this machine's
    resolver does not know it, so Samba's own name cache (in this client's lock
    directory) is given the address, as DNS would in a domain.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for sub in ("private", "lock", "state", "cache", "pid"):
        (directory / sub).mkdir(exist_ok=True)
    conf = directory / "smb.conf"
    conf.write_text("[global]\n" + "".join("\t%s = %s\n" % item for item in (
        ("workgroup", server.domain), ("realm", server.realm), ("security", "ads"),
        ("netbios name", netbios_name), ("interfaces", "127.0.0.1/8"),
        ("private dir", directory / "private"), ("lock directory", directory / "lock"),
        ("state directory", directory / "state"), ("cache directory", directory / "cache"),
        ("pid directory", directory / "pid"))))
    _run(["net", "cache", "add", "NBT/%s#20" % server.dc_fqdn.upper(), server.address,
          "86400", "--configfile=%s" % conf], "net cache add", timeout=30)
    return conf


def _tcp_open(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def main(argv: List[str]) -> int:
    """``python -m tests.servers.samba DIR``: run a DC until Ctrl-C (for trying things)."""
    workdir = Path(argv[0]) if argv else Path(os.environ.get("TMPDIR", "/tmp")) / "novahooks-dc"
    with start_samba(workdir) as server:
        print(f"Samba AD DC {samba_version()} on {server.address}: realm {server.realm}, "
              f"bind {server.bind_dn}, CA {server.ca_file}; Ctrl-C stops it", flush=True)
        try:
            server.process.proc.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
