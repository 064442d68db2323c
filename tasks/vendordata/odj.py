"""Offline domain-join blobs from Samba's ``net offlinejoin provision`` (Samba >= 4.15).

The blob is what Windows' ``djoin /provision`` makes and ``djoin /requestODJ``
consumes: the machine account's name, domain, SID and a machine password. net
reuses the computer object the AD driver pre-staged (``reuse``) and sets its
password. The service account's password reaches net in an authentication file
in a private temporary directory, never on the command line (``/proc`` shows
that to every local user).
"""

import os
import re
import subprocess
import tempfile
from typing import List

from novahooks.settings import Settings
from tasks.errors import AuthFailed, BackendUnavailable, Misconfigured, PermanentError

BACKEND = "odj"
_AUTH = ("LOGON_FAILURE", "ACCESS_DENIED", "WRONG_PASSWORD", "ACCOUNT_DISABLED")
_DOWN = ("DCNOTFOUND", "failed to find DC", "CONNECTION_REFUSED", "IO_TIMEOUT",
         "HOST_UNREACHABLE", "NETWORK_UNREACHABLE", "lookup DC info")


def username(bind_dn: str) -> str:
    """The service account's name: its DN's first RDN (CN=novahooks,... -> novahooks)."""
    first = re.split(r"(?<!\\),", bind_dn, maxsplit=1)[0]
    return first.split("=", 1)[-1].replace("\\", "")


def provision(settings: Settings, computer: str, ou: str, timeout: float) -> str:
    """The base64 blob for ``computer`` (NetBIOS name, no ``$``)."""
    directory, config = settings.directory, settings.vendordata
    if not directory.bind_dn or not directory.dns_domain:
        raise Misconfigured("[directory] bind_dn and dns_domain are needed for offline "
                            "domain-join blobs", backend=BACKEND)
    realm = directory.dns_domain.strip(".").upper()
    with tempfile.TemporaryDirectory(prefix="novahooks-odj-") as private:
        auth = os.path.join(private, "auth")
        fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("username = %s\npassword = %s\ndomain = %s\n"
                         % (username(directory.bind_dn), directory.password.reveal(), realm))
        blob = os.path.join(private, "odj.txt")
        argv: List[str] = [config.net_command, "offlinejoin", "provision", "domain=" + realm,
                           "machine_name=" + computer, "machine_account_ou=" + ou, "reuse",
                           "savefile=" + blob, "--authentication-file=" + auth]
        if config.odj_dc:
            argv.append("dcname=" + config.odj_dc)
        if config.odj_smb_conf:
            argv.append("--configfile=" + config.odj_smb_conf)
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                    cwd=private)
        except FileNotFoundError:
            raise Misconfigured("[vendordata] net_command: %s not found (Debian: samba-common-"
                                "bin)" % config.net_command, backend=BACKEND) from None
        except subprocess.TimeoutExpired:
            raise BackendUnavailable("net offlinejoin provision for %s took over %.1f s"
                                     % (computer, timeout), backend=BACKEND) from None
        if result.returncode != 0 or not os.path.exists(blob):
            lines = [line for line in (result.stdout + result.stderr).splitlines()
                     if line.strip()]
            said = lines[-1].strip() if lines else "exit code %d" % result.returncode
            text = "net offlinejoin provision %s: %s" % (computer, said)
            if any(mark in said for mark in _AUTH):
                raise AuthFailed(text, backend=BACKEND)
            if any(mark in said for mark in _DOWN):
                raise BackendUnavailable(text, backend=BACKEND)
            raise PermanentError(text, backend=BACKEND)
        with open(blob, "rb") as handle:
            raw = handle.read()
    return decode(raw)


def decode(raw: bytes) -> str:
    """The blob's base64 text; djoin writes (and Samba copies) it as UTF-16LE with a BOM."""
    if raw.startswith(b"\xff\xfe"):
        text = raw[2:].decode("utf-16-le")
    elif len(raw) > 1 and raw[1:2] == b"\x00":
        text = raw.decode("utf-16-le")
    else:
        text = raw.decode("ascii")
    return text.strip().strip("\x00")
