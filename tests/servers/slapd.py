"""A private OpenLDAP slapd with TLS, a service account and real ACLs.

The directory backend must prove it works with least privilege: the service
account may write only under ``ou=hosts`` and must verify the server's
certificate, as it would against an operator's directory. The admin (rootdn)
exists only to inspect results.
"""

import base64
import hashlib
import os
import secrets
import subprocess
from pathlib import Path
from typing import Optional

from tests.servers.base import Process, Server, ServerError, free_port, tail, wait_for
from tests.servers.tls import make_ca_and_cert

SCHEMAS = ("core", "cosine", "nis", "inetorgperson")


def ssha(password: str) -> str:
    """An RFC 2307 {SSHA} hash, so no clear password sits in the config."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


class SlapdServer(Server):
    """Connection facts of a running slapd; `stop()` or a `with` block ends it."""

    def __init__(self, process: Process, port: int, ldaps_port: Optional[int], suffix: str,
                 admin_password: str, bind_password: str, ca_file: Optional[Path]) -> None:
        self.process = process
        self.port = port
        self.url = f"ldap://127.0.0.1:{port}"
        self.ldaps_url = f"ldaps://127.0.0.1:{ldaps_port}" if ldaps_port else None
        self.suffix = suffix
        self.admin_dn = f"cn=admin,{suffix}"
        self.admin_password = admin_password
        self.bind_dn = f"cn=novahooks,ou=services,{suffix}"
        self.bind_password = bind_password
        self.hosts_base = f"ou=hosts,{suffix}"
        self.ca_file = ca_file


def _config(workdir: Path, suffix: str, admin_password: str, tls: bool) -> str:
    lines = [f"include /etc/ldap/schema/{name}.schema" for name in SCHEMAS]
    lines += ["modulepath /usr/lib/ldap", "moduleload back_mdb",
              f"pidfile {workdir}/slapd.pid", f"argsfile {workdir}/slapd.args"]
    if tls:
        tls_dir = workdir / "tls"
        lines += [f"TLSCACertificateFile {tls_dir}/ca.crt",
                  f"TLSCertificateFile {tls_dir}/server.crt",
                  f"TLSCertificateKeyFile {tls_dir}/server.key"]
    service = f"cn=novahooks,ou=services,{suffix}"
    lines += [
        # Frontend rules: anyone may read the root DSE and schema (client discovery).
        'access to dn.base="" by * read',
        'access to dn.base="cn=Subschema" by * read',
        "database mdb", f'suffix "{suffix}"', f'rootdn "cn=admin,{suffix}"',
        f"rootpw {ssha(admin_password)}", f"directory {workdir}/data", "maxsize 104857600",
        # First match wins: the service account writes hosts, reads the rest.
        f'access to dn.subtree="ou=hosts,{suffix}"',
        f'  by dn.exact="{service}" write', "  by users read", "  by * none",
        "access to attrs=userPassword", "  by self =w", "  by anonymous auth", "  by * none",
        "access to *", "  by users read", "  by * none",
    ]
    return "\n".join(lines) + "\n"


def _base_ldif(suffix: str, bind_password: str) -> str:
    dc = suffix.split(",")[0].split("=", 1)[1]
    return (f"dn: {suffix}\nobjectClass: dcObject\nobjectClass: organization\n"
            f"dc: {dc}\no: {dc}\n\n"
            f"dn: ou=hosts,{suffix}\nobjectClass: organizationalUnit\nou: hosts\n\n"
            f"dn: ou=services,{suffix}\nobjectClass: organizationalUnit\nou: services\n\n"
            f"dn: cn=novahooks,ou=services,{suffix}\nobjectClass: applicationProcess\n"
            f"objectClass: simpleSecurityObject\ncn: novahooks\n"
            f"userPassword: {ssha(bind_password)}\n")


def _ldap_ok(args: list, env: Optional[dict] = None) -> bool:
    try:
        return subprocess.run(args, capture_output=True, env=env, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def start_slapd(workdir: Path, suffix: str = "dc=example,dc=test", tls: bool = True,
                timeout: float = 15.0) -> SlapdServer:
    """Load the base entries offline with slapadd, then run slapd on fresh ports.

    Ready means an anonymous root-DSE search answers and, with `tls`, a StartTLS
    bind as the service account verifies the certificate against the CA, so a
    broken TLS set-up fails here with slapd's log rather than later in a test.
    """
    if not suffix.lower().startswith("dc="):
        raise ValueError(f"suffix must start with dc= (it becomes a dcObject): {suffix!r}")
    workdir = Path(workdir).resolve()
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    if any(data.iterdir()):
        raise ServerError(f"slapd: {data} is not empty; give each server a fresh workdir")
    admin_password = secrets.token_urlsafe(16)
    bind_password = secrets.token_urlsafe(16)
    ca_file = make_ca_and_cert(workdir / "tls").ca_file if tls else None
    conf = workdir / "slapd.conf"
    conf.write_text(_config(workdir, suffix, admin_password, tls))
    ldif = workdir / "base.ldif"
    ldif.write_text(_base_ldif(suffix, bind_password))
    loaded = subprocess.run(["slapadd", "-f", str(conf), "-l", str(ldif)],
                            capture_output=True, text=True)
    if loaded.returncode != 0:
        raise ServerError(f"slapadd failed: {loaded.stdout}{loaded.stderr}")

    port = free_port()
    ldaps_port = free_port() if tls else None
    urls = f"ldap://127.0.0.1:{port}/"
    if ldaps_port:
        urls += f" ldaps://127.0.0.1:{ldaps_port}/"
    log = workdir / "slapd.log"
    # "-d none" keeps slapd in the foreground and still logs errors; "-d 0" hides them.
    process = Process("slapd", ["slapd", "-f", str(conf), "-h", urls, "-d", "none"], log)
    server = SlapdServer(process, port, ldaps_port, suffix, admin_password, bind_password,
                         ca_file)
    try:
        wait_for(lambda: _ldap_ok(["ldapsearch", "-x", "-LLL", "-H", server.url, "-b", "",
                                   "-s", "base", "namingContexts"]),
                 timeout, "slapd", process.proc, log)
        if ca_file is not None:
            env = dict(os.environ, LDAPTLS_CACERT=str(ca_file), LDAPTLS_REQCERT="demand")
            whoami = ["ldapwhoami", "-x", "-D", server.bind_dn, "-w", bind_password]
            for url, extra in ((server.url, ["-ZZ"]), (server.ldaps_url, [])):
                if not _ldap_ok(whoami + ["-H", url] + extra, env):
                    raise ServerError(f"slapd: verified TLS bind to {url} failed{tail(log)}")
    except BaseException:
        process.stop()
        raise
    return server
