"""Real Nova 34 serves a guest ``vendor_data2.json`` whose credential joins Samba's domain.

Nova's own metadata API and DynamicJSON provider (nova34_metadata.py, in the
Nova 34 venv) call ``novahooks vendordata`` over TLS with http_basic; what the
guest reads is then tried against the DC: the Windows server's machine
password and the Linux server's one-time password each authenticate as NAME$,
and with ``windows_join = odj`` the blob joins through Samba's requestodj
(test_vendordata_odj.py says why that is the consumer here).
"""

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from tests.nova.venv import NOVA_34, ensure_nova_venv, venv_python
from tests.servers.samba import SambaServer, client_conf, start_samba
from tests.servers.vendordata import VendordataServer, start_vendordata
from tests.tasks.backends.test_directory_ad import show
from tests.tasks.vendordata.test_vendordata_odj import request_odj, rpc_testjoin
from tests.tasks.vendordata.test_vendordata_service import audit, bind_as_machine

SCRIPT = Path(__file__).with_name("nova34_metadata.py")


@pytest.fixture(scope="module")
def service(samba: SambaServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[VendordataServer]:
    with start_vendordata(tmp_path_factory.mktemp("vendordata-nova34"), samba) as server:
        yield server


def guest_reads(service: VendordataServer, servers: List[Dict[str, Any]],
                workdir: Path) -> List[Dict[str, Any]]:
    python = venv_python(ensure_nova_venv(lambda line: print(line, flush=True), NOVA_34))
    password = workdir / "nova-vendordata-password"
    password.write_text(service.password)
    password.chmod(0o600)
    result = subprocess.run(
        [str(python), str(SCRIPT), "--target", service.url, "--ca-file",
         str(service.ca_file), "--username", service.username, "--password-file",
         str(password), "--servers", json.dumps(servers)],
        capture_output=True, text=True, timeout=300, cwd=workdir)
    (workdir / "nova34.log").write_text(result.stderr)
    lines = [json.loads(line) for line in result.stdout.splitlines()
             if line.startswith('{"event"')]
    assert lines and lines[-1]["event"] == "done", (lines[-1:], result.stderr[-3000:])
    for line in lines:
        if line["event"] == "nova_log":
            print("nova: %(level)s %(message)s" % line)  # Nova's own word on each call
    # Reads answered "retry" (over_budget on a loaded machine) were read again; keep the rest.
    return [line for line in lines if line["event"] == "read"
            and not (isinstance(line["vendor_data2"], dict) and line["vendor_data2"].get(
                "novahooks", {}).get("error", {}).get("retry"))]


def test_nova34_hands_the_guest_a_credential_that_authenticates(
        service: VendordataServer, samba: SambaServer, tmp_path: Path) -> None:
    windows, linux = "w" + uuid.uuid4().hex[:8], "l" + uuid.uuid4().hex[:8]
    reads = guest_reads(service, [{"name": windows, "metadata": {"os_type": "windows"}},
                                  {"name": linux, "metadata": {"os_type": "linux"}}],
                        tmp_path)
    by_name: Dict[str, List[Dict[str, Any]]] = {}
    for read in reads:
        assert read["status"] == 200, read
        by_name.setdefault(read["name"], []).append(read["vendor_data2"])
    assert sorted(by_name) == sorted([windows, linux])

    first, second = by_name[windows]
    assert first == second  # Nova asked twice (no cache); the same answer both times
    assert first["static"] == {}
    assert "join" in first["novahooks"], first
    join = first["novahooks"]["join"]
    assert join["method"] == "unsecure_join" and join["computer_name"] == windows.upper()
    assert bind_as_machine(samba, windows.upper(), join["machine_password"]).bound

    first, second = by_name[linux]
    assert first == second
    join = first["novahooks"]["join"]
    assert join["method"] == "one_time_password"
    assert bind_as_machine(samba, linux.upper(), join["one_time_password"]).bound

    for name in (windows, linux):
        instance = by_name[name][0]["novahooks"]["instance_id"]
        assert show(samba, name.upper())["description"] == [instance]
        handed = [r["credential"] for r in audit(service, instance)]
        assert handed[0] == "issued" and set(handed[1:]) == {"reused"}, handed


@pytest.fixture(scope="module")
def odj_service(tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Tuple[VendordataServer, SambaServer]]:
    """A DC with SMB (one per machine at a time) and a service answering ODJ blobs."""
    dc = start_samba(tmp_path_factory.mktemp("samba-smb-nova34") / "dc", smb=True)
    try:
        workdir = tmp_path_factory.mktemp("vendordata-nova34-odj")
        server = start_vendordata(workdir, dc, vendordata={
            "windows_join": "odj", "odj_dc": dc.address,
            "odj_smb_conf": str(client_conf(workdir / "net", dc, "NOVAVD"))})
        try:
            yield server, dc
        finally:
            server.stop()
    finally:
        dc.stop()


def test_nova34_hands_a_windows_guest_a_blob_that_joins_the_domain(
        odj_service: Tuple[VendordataServer, SambaServer], tmp_path: Path) -> None:
    service, dc = odj_service
    name = "o" + uuid.uuid4().hex[:8]
    reads = guest_reads(service, [{"name": name, "metadata": {"os_type": "windows"}}],
                        tmp_path)
    first, second = [read["vendor_data2"] for read in reads if read["name"] == name]
    assert first == second
    assert "join" in first["novahooks"], first
    join = first["novahooks"]["join"]
    assert join["method"] == "odj" and join["computer_name"] == name.upper()
    guest = tmp_path / "guest"
    said = request_odj(guest, dc, name.upper(), join["odj_blob"])
    assert "Successfully requested Offline Domain Join" in said, said
    joined = rpc_testjoin(guest, dc)
    assert "is OK" in joined.stdout, joined.stdout + joined.stderr
