"""A private CA and a server certificate, so local servers speak verified TLS.

Clients under test verify certificates exactly as they would in production
(CERT_REQUIRED against a CA file); a self-signed leaf or disabled checks would
let a broken TLS set-up pass unnoticed. Made with the ``openssl`` command so no
Python dependency is needed.
"""

import datetime
import secrets
import subprocess
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence

from tests.servers.base import ServerError

_KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


class TlsFiles(NamedTuple):
    """Paths of the PEM files a server and its clients need."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _openssl(args: List[str], cwd: Path) -> None:
    result = subprocess.run(["openssl"] + args, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServerError(f"openssl {args[0]} failed: {result.stderr.strip()}")


#: How long before "now" certificates here become valid: real CAs back-date notBefore
#: (Let's Encrypt by an hour) so that a client whose clock is a little behind accepts a
#: certificate issued a moment ago; the multi-host bench runs a worker host 5 minutes behind.
BACKDATE = datetime.timedelta(days=1)

_CA_CONFIG = """\
[ca]
default_ca = local
[local]
dir = .
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
"""


def _stamp(when: datetime.datetime) -> str:
    return when.astimezone(datetime.timezone.utc).strftime("%Y%m%d%H%M%SZ")


def make_ca_and_cert(dir: Path, hostname: str = "localhost",
                     ips: Optional[Sequence[str]] = None,
                     valid_from: Optional[datetime.datetime] = None) -> TlsFiles:
    """Create ``ca.crt`` and a CA-signed ``server.crt``/``server.key`` in `dir`.

    The leaf names `hostname` and every address in `ips` (default 127.0.0.1) as
    subjectAltNames, because modern clients ignore the CN. EC P-256 keys keep
    generation instant. Keys are mode 0600: servers here run as root. Both
    certificates are valid from `valid_from` (default: :data:`BACKDATE` ago), which
    ``openssl ca`` can set and ``openssl req -x509`` (OpenSSL 3.0) cannot.
    """
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    ips = ["127.0.0.1"] if ips is None else list(ips)
    files = TlsFiles(dir / "ca.crt", dir / "server.crt", dir / "server.key")
    start = valid_from or datetime.datetime.now(datetime.timezone.utc) - BACKDATE
    (dir / "ca.cnf").write_text(_CA_CONFIG)
    (dir / "index.txt").write_text("")
    (dir / "serial").write_text("%032x\n" % secrets.randbits(127))
    (dir / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE\n"
        "keyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\n")
    san = ",".join([f"DNS:{hostname}"] + [f"IP:{ip}" for ip in ips])
    (dir / "server.ext").write_text(
        f"subjectAltName={san}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n")
    _openssl(["req", "-new", *_KEY_ARGS, "-keyout", "ca.key", "-out", "ca.csr",
              "-subj", "/CN=novahooks test CA"], dir)
    _openssl(["ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", "ca.key",
              "-in", "ca.csr", "-out", "ca.crt", "-notext", "-extfile", "ca.ext",
              "-startdate", _stamp(start),
              "-enddate", _stamp(start + datetime.timedelta(days=3650))], dir)
    _openssl(["req", "-new", *_KEY_ARGS, "-keyout", "server.key", "-out", "server.csr",
              "-subj", f"/CN={hostname}"], dir)
    _openssl(["ca", "-batch", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
              "-in", "server.csr", "-out", "server.crt", "-notext", "-extfile", "server.ext",
              "-startdate", _stamp(start),
              "-enddate", _stamp(start + datetime.timedelta(days=825))], dir)
    for key in (dir / "ca.key", files.key_file):
        key.chmod(0o600)
    return files
