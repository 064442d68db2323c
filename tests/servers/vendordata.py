"""``novahooks vendordata`` as a real process, against a Samba AD DC, for tests and bench/.

Everything Nova's DynamicJSON provider needs to call it the way it would in
production: a private CA whose server certificate names 127.0.0.1 and
localhost (Nova's ``vendordata_dynamic_ssl_certfile`` is the CA), http_basic
credentials in files, a Fernet key file, its own SQLite ledger and JSONL audit
trail. The directory is the DC's ``OU=NovaVMs`` through the delegated service
account, as in tests/test_active_directory.py.
"""

import configparser
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import requests

from tests.servers.base import Process, Server, ServerError, free_port, wait_for
from tests.servers.samba import SambaServer
from tests.servers.tls import make_ca_and_cert

ROOT = Path(__file__).resolve().parents[2]


class VendordataServer(Server):
    def __init__(self, process: Process, workdir: Path, port: int, ca_file: Path,
                 username: str, password: str, config_path: Path) -> None:
        self.process = process
        self.workdir = workdir
        self.port = port
        self.url = "https://127.0.0.1:%d/" % port
        self.ca_file = ca_file
        self.username = username
        self.password = password
        self.config_path = config_path
        self.ledger_url = "sqlite:///%s" % (workdir / "ledger.sqlite")
        self.audit_path = workdir / "audit.jsonl"
        self.log = process.log

    def post(self, body: Dict[str, object], auth: Optional[tuple] = None,
             timeout: float = 10.0) -> requests.Response:
        """POST as Nova's DynamicJSON does (same headers), with the right credentials
        unless ``auth`` says otherwise."""
        return requests.post(self.url, json=body, verify=str(self.ca_file), timeout=timeout,
                             auth=auth if auth is not None else (self.username, self.password),
                             headers={"Accept": "application/json",
                                      "User-Agent": "openstack-nova-vendordata"})


    def settle(self, body: Dict[str, object], timeout: float = 60.0) -> requests.Response:
        """POST until the answer is not ``over_budget`` (the work went on behind it), as
        the guest's recipe reads again: on a loaded machine a first read may take longer
        than the budget."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.post(body, timeout=timeout)
            error = reply.json().get("error") if reply.status_code == 200 else None
            if not error or error.get("code") != "over_budget" or time.monotonic() > deadline:
                return reply
            time.sleep(0.5)


def write_config(workdir: Path, samba: SambaServer, port: int,
                 overrides: Dict[str, Dict[str, Optional[str]]]) -> Dict[str, Path]:
    """The service's INI file and the files it names; returns the interesting paths."""
    workdir.mkdir(parents=True, exist_ok=True)
    tls = make_ca_and_cert(workdir / "tls", hostname="localhost", ips=["127.0.0.1"])
    secret_files = {"api": "Api-" + secrets.token_urlsafe(16), "ad": samba.bind_password}
    paths = {}
    for name, value in secret_files.items():
        path = workdir / ("%s-password" % name)
        path.write_text(value)
        path.chmod(0o600)
        paths[name] = path
    key = workdir / "vendordata.key"
    subprocess.run([sys.executable, "-m", "novahooks.cli", "vendordata", "--generate-key",
                    str(key)], check=True, capture_output=True, cwd=ROOT)
    sections: Dict[str, Dict[str, Optional[str]]] = {
        "ledger": {"url": "sqlite:///%s" % (workdir / "ledger.sqlite")},
        "audit": {"drivers": "jsonl", "path": str(workdir / "audit.jsonl")},
        # The DC's own DNS, as the workers' [dns] would have it: the service's shared
        # validation (tasks/preflight.py) asks it before anything is written.
        "dns": {"server": samba.address, "port": "53", "zone": samba.zone,
                "reverse_zones": samba.reverse_zone, "allow_unsigned": "true"},
        "directory": {"driver": "ad", "url": samba.url, "starttls": "true",
                      "bind_dn": samba.bind_dn, "password_file": str(paths["ad"]),
                      "base_dn": samba.computers_ou, "ca_file": str(samba.ca_file),
                      "tls_server_name": samba.dc_fqdn, "dns_domain": samba.zone,
                      "linux": "computer"},
        "vendordata": {"address": "127.0.0.1", "port": str(port),
                       "tls_cert_file": str(tls.cert_file), "tls_key_file": str(tls.key_file),
                       "username": "nova", "password_file": str(paths["api"]),
                       "secret_key_file": str(key), "steps": "directory",
                       "windows_join": "password", "ca_file": str(tls.ca_file),
                       "threads": "16"},
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    parser = configparser.ConfigParser(interpolation=None)
    for section, values in sections.items():
        parser[section] = {k: v for k, v in values.items() if v is not None}
    config = workdir / "novahooks.conf"
    with open(config, "w") as handle:
        parser.write(handle)
    return {"config": config, "ca": tls.ca_file, "api_password": paths["api"]}


def start_vendordata(workdir: Path, samba: SambaServer, timeout: float = 30.0,
                     **overrides: Dict[str, Optional[str]]) -> VendordataServer:
    """Write the configuration, start ``novahooks vendordata``, wait until it answers TLS."""
    port = free_port()
    paths = write_config(workdir, samba, port, overrides)
    log = workdir / "vendordata.log"
    process = Process("vendordata", [sys.executable, "-m", "novahooks.cli", "--config",
                                     str(paths["config"]), "vendordata"], log, cwd=ROOT)
    server = VendordataServer(process, workdir, port, paths["ca"], "nova",
                              paths["api_password"].read_text(), paths["config"])
    try:
        wait_for(lambda: requests.get(server.url + "healthz", verify=str(paths["ca"]),
                                      timeout=2).status_code == 401,
                 timeout, "novahooks vendordata", process.proc, log)
    except ServerError:
        process.stop()
        raise
    return server
