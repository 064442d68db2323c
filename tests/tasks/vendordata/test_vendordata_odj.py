"""Windows VMs with ``windows_join = odj``: a blob Samba's own requestodj accepts.

``djoin /requestODJ`` cannot run here; ``net offlinejoin requestodj`` is Samba's
implementation of the same consumer (NetRequestOfflineDomainJoin: it checks the
blob is for this machine, then stores the machine account and its password as
a joined member would). Whether the join is real is then asked of the DC:
``net rpc testjoin`` opens a Netlogon secure channel as NAME$ with the password
that came out of the blob. The DC runs SMB for net (tests/servers/samba.py,
``smb=True``), so it is this module's own.
"""

import json
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from novahooks.settings import load_settings
from tests.servers.samba import SambaServer, client_conf, start_samba
from tests.servers.vendordata import VendordataServer, start_vendordata
from tests.tasks.backends.test_directory_ad import show
from tests.tasks.vendordata.test_vendordata_service import body
from tasks.backends.directory.ad import AdDirectory
from tasks.ledger import Ledger
from tasks.vendordata.request import parse


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaServer]:
    server = start_samba(tmp_path_factory.mktemp("samba-smb") / "dc", smb=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(dc: SambaServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[VendordataServer]:
    workdir = tmp_path_factory.mktemp("vendordata-odj")
    net = client_conf(workdir / "net", dc, "NOVAVD")
    server = start_vendordata(workdir, dc, vendordata={
        "windows_join": "odj", "odj_dc": dc.address, "odj_smb_conf": str(net)})
    try:
        yield server
    finally:
        server.stop()


def net(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(["net", *args], capture_output=True, text=True, timeout=60)


def request_odj(guest: Path, dc: SambaServer, computer: str, blob: str) -> str:
    """What the guest recipe does (the blob as UTF-16LE with a BOM, as djoin reads it),
    through Samba's requestodj in a machine directory of the guest's own."""
    conf = client_conf(guest, dc, computer)
    loadfile = guest / "odj.txt"
    loadfile.write_bytes(b"\xff\xfe" + blob.encode("utf-16-le"))
    result = net("offlinejoin", "requestodj", "loadfile=%s" % loadfile,
                 "--configfile=%s" % conf)
    return result.stdout + result.stderr


def rpc_testjoin(guest: Path, dc: SambaServer) -> "subprocess.CompletedProcess[str]":
    return net("rpc", "testjoin", "-S", dc.address, "--configfile=%s" % (guest / "smb.conf"))


def test_windows_vm_gets_a_blob_that_joins_the_domain(service: VendordataServer,
                                                      dc: SambaServer, tmp_path: Path) -> None:
    host = "odj-" + uuid.uuid4().hex[:8]
    request = body(host, "windows")
    answer = service.settle(request)
    assert answer.status_code == 200, answer.text
    join = answer.json()["join"]
    assert join["method"] == "odj" and join["computer_name"] == host.upper()
    assert "machine_password" not in join
    blob = join["odj_blob"]
    shown = show(dc, host.upper())
    assert shown is not None and shown["description"] == [request["instance-id"]]

    guest = tmp_path / "guest"
    said = request_odj(guest, dc, host.upper(), blob)
    assert "Successfully requested Offline Domain Join" in said, said
    joined = rpc_testjoin(guest, dc)
    assert "is OK" in joined.stdout, joined.stdout + joined.stderr
    assert show(dc, host.upper())["userAccountControl"] == ["4096"]

    stranger = tmp_path / "stranger"  # the control: a machine that never joined
    client_conf(stranger, dc, host.upper())
    assert "is OK" not in rpc_testjoin(stranger, dc).stdout

    assert service.settle(request).json()["join"]["odj_blob"] == blob
    assert blob not in service.audit_path.read_text() + service.log.read_text()


def test_a_blob_for_another_machine_is_refused_by_requestodj(
        service: VendordataServer, dc: SambaServer, tmp_path: Path) -> None:
    blob = service.settle(body("odj-" + uuid.uuid4().hex[:8], "windows"),
                        timeout=15).json()["join"]["odj_blob"]
    said = request_odj(tmp_path / "other", dc, "OTHERVM", blob)
    assert "Successfully" not in said and "netbios name" in said


def test_deleting_the_vm_removes_the_joined_account(service: VendordataServer,
                                                    dc: SambaServer, tmp_path: Path) -> None:
    host = "odj-" + uuid.uuid4().hex[:8]
    request = body(host, "windows")
    blob = service.settle(request).json()["join"]["odj_blob"]
    guest = tmp_path / "guest"
    assert "Successfully" in request_odj(guest, dc, host.upper(), blob)
    settings = load_settings(str(service.config_path))
    event = parse(json.dumps(request).encode(),
                  settings.vendordata)
    Ledger(service.ledger_url).tombstone(event.uuid, host)
    AdDirectory(settings.directory).deregister(event)
    assert show(dc, host.upper()) is None
    assert "is OK" not in rpc_testjoin(guest, dc).stdout
