"""Start and stop the stand-in as a process of its own, as tests and the demo do."""

import argparse
import base64
import secrets
import sys
import urllib.request
from pathlib import Path
from typing import List, Optional

from tests.servers.base import Process, Server, free_port
from tests.servers.wapi.http import WAPI_VERSION, serve


class WapiServer(Server):
    """A running stand-in: ``url`` is the WAPI base a driver's [ipam]/[dns] url takes."""

    def __init__(self, process: Process, port: int, username: str, password: str) -> None:
        self.process = process
        self.port = port
        self.url = "http://127.0.0.1:%d/wapi/v%s" % (port, WAPI_VERSION)
        self.username, self.password = username, password


def _answers(url: str, username: str, password: str) -> bool:
    request = urllib.request.Request(url + "/networkview", headers={
        "Authorization": "Basic " + base64.b64encode(
            ("%s:%s" % (username, password)).encode()).decode()})
    with urllib.request.urlopen(request, timeout=2) as response:
        return response.status == 200


def start_wapi(workdir: Path, username: str = "novahooks", timeout: float = 20.0,
               call_ms: float = 0.0) -> WapiServer:
    """Start the stand-in on a free loopback port with a fresh password; wait until it
    answers. ``call_ms``: what each call costs on top, one call at a time (benches)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    credentials = workdir / "wapi-credentials"
    credentials.write_text("%s:%s" % (username, password))
    credentials.chmod(0o600)
    port = free_port()
    log = workdir / "wapi.log"
    process = Process("wapi", [sys.executable, "-m", "tests.servers.wapi", "--port",
                               str(port), "--credentials-file", str(credentials),
                               "--call-ms", str(call_ms)], log,
                      cwd=workdir)
    server = WapiServer(process, port, username, password)
    return server.ready(lambda: _answers(server.url, username, password), timeout,
                        "WAPI stand-in", log)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--credentials-file", type=Path, required=True,
                        help="a file holding user:password (kept out of the process list)")
    parser.add_argument("--call-ms", type=float, default=0.0,
                        help="ms each call takes on top, one call at a time (a grid "
                             "master's per-call cost, for benches)")
    args = parser.parse_args(argv)
    user, _, password = args.credentials_file.read_text().strip().partition(":")
    serve(args.port, user, password, args.call_ms)
    return 0
