"""A private CA and a server certificate, so local servers speak verified TLS.

Clients under test verify certificates exactly as they would in production
(CERT_REQUIRED against a CA file); a self-signed leaf or disabled checks would
let a broken TLS set-up pass unnoticed. Made with the ``openssl`` command so no
Python dependency is needed.
"""

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


def make_ca_and_cert(dir: Path, hostname: str = "localhost",
                     ips: Optional[Sequence[str]] = None) -> TlsFiles:
    """Create ``ca.crt`` and a CA-signed ``server.crt``/``server.key`` in `dir`.

    The leaf names `hostname` and every address in `ips` (default 127.0.0.1) as
    subjectAltNames, because modern clients ignore the CN. EC P-256 keys keep
    generation instant. Keys are mode 0600: servers here run as root.
    """
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    ips = ["127.0.0.1"] if ips is None else list(ips)
    files = TlsFiles(dir / "ca.crt", dir / "server.crt", dir / "server.key")
    _openssl(["req", "-x509", *_KEY_ARGS, "-keyout", "ca.key", "-out", "ca.crt",
              "-days", "3650", "-subj", "/CN=novahooks test CA",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir)
    _openssl(["req", "-new", *_KEY_ARGS, "-keyout", "server.key", "-out", "server.csr",
              "-subj", f"/CN={hostname}"], dir)
    san = ",".join([f"DNS:{hostname}"] + [f"IP:{ip}" for ip in ips])
    (dir / "server.ext").write_text(
        f"subjectAltName={san}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n")
    _openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
              "-CAcreateserial", "-days", "825", "-sha256", "-extfile", "server.ext",
              "-out", "server.crt"], dir)
    for key in (dir / "ca.key", files.key_file):
        key.chmod(0o600)
    return files
