"""``novahooks vendordata`` as a real process over TLS with http_basic, against Samba AD.

What a guest is handed must work: the computer account authenticates against
the DC with it (an LDAP simple bind as NAME$ over LDAPS, which Samba checks
against the account's password and its userAccountControl). Samba itself is
asked what it holds (samba-tool on the DC's database).
"""

import json
import ssl
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest
import requests
from ldap3 import Connection, Server, Tls

from novahooks.settings import load_settings
from tests.servers.samba import SambaServer
from tests.servers.vendordata import VendordataServer, start_vendordata
from tests.tasks.backends.test_directory_ad import show
from tasks.ledger import Ledger
from tasks.vendordata.credentials import CredentialStore, load_keys


@pytest.fixture(scope="module")
def service(samba: SambaServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[VendordataServer]:
    with start_vendordata(tmp_path_factory.mktemp("vendordata"), samba) as server:
        yield server


def body(hostname: str, os_type: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    """What Nova 34's DynamicJSON provider POSTs (nova/api/metadata/vendordata_dynamic.py)."""
    data: Dict[str, Any] = {"project-id": "6f70656e737461636b20342065766572",
                            "instance-id": str(uuid.uuid4()),
                            "image-id": str(uuid.uuid4()), "user-data": None,
                            "hostname": hostname,
                            "metadata": {"os_type": os_type} if os_type else {},
                            "boot-roles": "member,reader"}
    data.update(extra)
    return data


def name(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:8]


def bind_as_machine(samba: SambaServer, computer: str, password: str) -> Connection:
    """An LDAPS simple bind as NAME$@REALM: Samba refuses a wrong password (49, 52e) and
    a disabled account (49, 533)."""
    tls = Tls(ca_certs_file=str(samba.ca_file), validate=ssl.CERT_REQUIRED,
              valid_names=[samba.dc_fqdn])
    conn = Connection(Server(samba.address, port=636, use_ssl=True, tls=tls),
                      user="%s$@%s" % (computer, samba.realm), password=password)
    conn.bind()
    return conn


def audit(service: VendordataServer, instance: str) -> list:
    """The instance's audit records, less over_budget answers (a loaded machine's: they
    carried nothing, and the work behind them has a record of its own)."""
    return [r for r in map(json.loads, service.audit_path.read_text().splitlines())
            if r.get("instance_uuid") == instance
            and "OverBudget" not in (r.get("error") or "")]


def store(service: VendordataServer) -> CredentialStore:
    settings = load_settings(str(service.config_path))
    return CredentialStore(Ledger(service.ledger_url).engine,
                           load_keys(settings.vendordata.secret_key_file))


def test_windows_vm_gets_a_machine_password_the_dc_accepts_and_the_same_on_every_read(
        service: VendordataServer, samba: SambaServer) -> None:
    host = name("win-")
    request = body(host, "windows")
    first = service.settle(request)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["join"]["method"] == "unsecure_join"
    assert answer["join"]["computer_name"] == host.upper()
    assert answer["join"]["domain"] == samba.zone
    assert answer["fqdn"] == "%s.%s" % (host, samba.zone)
    password = answer["join"]["machine_password"]
    assert len(password) == 32

    shown = show(samba, host.upper())
    assert shown is not None and shown["description"] == [request["instance-id"]]
    assert shown["userAccountControl"] == ["4096"]  # enabled: the join may authenticate
    conn = bind_as_machine(samba, host.upper(), password)
    assert conn.bound, conn.result
    # Samba answers no search before a bind: reading its own object proves the session.
    assert conn.search(samba.computers_ou, "(sAMAccountName=%s$)" % host.upper())
    assert [e.entry_dn for e in conn.entries] == shown["dn"]
    assert not bind_as_machine(samba, host.upper(), password[::-1]).bound

    again = service.settle(request)
    assert again.status_code == 200 and again.json() == answer

    records = audit(service, request["instance-id"])
    assert [(r["stage"], r["credential"]) for r in records][:2] == [("done", "issued"),
                                                                     ("done", "reused")]
    assert {r["credential"] for r in records[2:]} <= {"reused"}
    assert all(r["join"] == "password" and r["registered"] == ["directory"]
               for r in records)
    for where in (service.audit_path, service.log):
        assert password not in where.read_text()
    row = store(service).raw(request["instance-id"])
    assert row is not None and row["method"] == "password"
    assert password not in json.dumps(row)


def test_linux_vm_gets_a_one_time_password_for_adcli(service: VendordataServer,
                                                     samba: SambaServer) -> None:
    host = name("lnx-")
    request = body(host, "linux")
    answer = service.settle(request).json()
    join = answer["join"]
    assert join["method"] == "one_time_password"
    assert "machine_password" not in join and "odj_blob" not in join
    assert bind_as_machine(samba, host.upper(), join["one_time_password"]).bound
    assert show(samba, host.upper())["description"] == [request["instance-id"]]


def test_concurrent_first_reads_of_one_instance_issue_one_credential(
        service: VendordataServer, samba: SambaServer) -> None:
    request = body(name("par-"), "windows")
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: service.settle(request).json(), range(6)))
    passwords = {a["join"]["machine_password"] for a in answers}
    assert len(passwords) == 1, answers
    assert bind_as_machine(samba, request["hostname"].upper(), passwords.pop()).bound
    issued = [r for r in audit(service, request["instance-id"])
              if r["credential"] == "issued"]
    assert len(issued) == 1


@pytest.mark.parametrize("auth", [None, ("nova", "wrong"), ("other", "x")])
def test_wrong_or_missing_credentials_are_refused_and_nothing_is_made(
        service: VendordataServer, samba: SambaServer, auth: Any) -> None:
    host = name("anon-")
    request = body(host, "windows")
    if auth is None:
        answer = requests.post(service.url, json=request, verify=str(service.ca_file),
                               timeout=10)
    else:
        answer = service.post(request, auth=auth)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic ")
    assert answer.json()["error"]["code"] == "unauthorized"
    assert "join" not in answer.json()
    assert show(samba, host.upper()) is None
    assert audit(service, request["instance-id"]) == []


def test_the_service_speaks_only_verified_tls(service: VendordataServer) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(service.url + "healthz", verify=True, timeout=5)  # system CAs only
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(service.url.replace("https", "http") + "healthz", timeout=5)


def test_a_squatted_name_gets_an_error_answer_and_no_credential(
        service: VendordataServer, samba: SambaServer) -> None:
    host = name("sq-")
    samba.samba_tool("computer", "create", host.upper(), "--computerou=OU=%s" % "NovaVMs")
    request = body(host, "windows")
    answer = service.settle(request)
    assert answer.status_code == 200
    error = answer.json()["error"]
    assert error["code"] == "conflict" and error["retry"] is False
    assert "belongs to no instance" in error["message"]
    assert "join" not in answer.json()
    squatter = show(samba, host.upper())
    assert squatter is not None and "description" not in squatter  # left as it was
    assert store(service).raw(request["instance-id"]) is None
    assert audit(service, request["instance-id"])[-1]["stage"] == "failed"


@pytest.mark.parametrize("hostile, code, said", [
    ("wpad", "refused_name", "reserved name ([dns] reserved_names)"),
    ("dc1", "conflict", "dc1.nova.test is the zone's"),
    ("squat-dns", "conflict", "holds records not owned by instance"),
])
def test_a_hostile_name_is_refused_before_anything_is_made(
        service: VendordataServer, samba: SambaServer, hostile: str, code: str,
        said: str) -> None:
    """Names DNS would refuse later (the chain's shared validation, tasks/preflight.py):
    WPAD, the DC's own name (the zone's NS), a name an administrator's record holds."""
    host = hostile if hostile != "squat-dns" else name("dns-")
    if hostile == "squat-dns":
        samba.add_record(host, "A", "10.0.2.250")
    request = body(host, "windows")
    answer = service.settle(request)
    assert answer.status_code == 200, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and error["retry"] is False, error
    assert said in error["message"]
    assert "join" not in answer.json()
    if hostile != "dc1":  # DC1 is the DC's own computer account: left as it is
        assert show(samba, host.upper()) is None
    assert store(service).raw(request["instance-id"]) is None
    assert Ledger(service.ledger_url).made(request["instance-id"]) == {}
    assert audit(service, request["instance-id"])[-1]["stage"] == "failed"


def prestage(service: VendordataServer, request: Dict[str, Any]) -> Dict[str, Any]:
    """What a worker's pre-boot chain leaves: the computer object and the ledger's note."""
    from tasks.backends.directory.ad import AdDirectory
    from tasks.vendordata.request import parse
    settings = load_settings(str(service.config_path))
    event = parse(json.dumps(request).encode(), settings.vendordata)
    note = AdDirectory(settings.directory).register(event)
    Ledger(service.ledger_url).remember(event.uuid, "directory", note)
    return note


def test_an_object_a_worker_made_gets_its_credential_before_the_guest_asks(
        service: VendordataServer, samba: SambaServer) -> None:
    from tests.helpers import until
    request = body(name("pre-"), "windows")
    prestage(service, request)
    until(lambda: (store(service).raw(request["instance-id"]) or {}).get("token"), 30,
          "a credential issued ahead")
    ahead = audit(service, request["instance-id"])
    assert [(r["stage"], r["credential"], r.get("ahead")) for r in ahead] == [
        ("done", "issued", True)]
    answer = service.post(request).json()  # one read, no retry: nothing left to do
    join = answer["join"]
    assert join["method"] == "unsecure_join"
    assert bind_as_machine(samba, request["hostname"].upper(), join["machine_password"]).bound
    assert audit(service, request["instance-id"])[-1]["credential"] == "reused"


def test_an_object_that_has_a_password_already_is_not_given_another(
        service: VendordataServer, samba: SambaServer) -> None:
    """A machine joined it by another path (here: its password set directly): neither
    the service's own thread nor the guest's read resets it."""
    from tasks.backends.directory.ad import AdDirectory
    from tasks.vendordata.request import parse
    settings = load_settings(str(service.config_path))
    request = body(name("jnd-"), "windows")
    event = parse(json.dumps(request).encode(), settings.vendordata)
    driver = AdDirectory(settings.directory)
    note = driver.register(event)
    driver.set_machine_password(event, "Joined-0123456789abcdefABCDEF")
    Ledger(service.ledger_url).remember(event.uuid, "directory", note)
    answer = service.settle(request).json()
    assert answer["error"]["code"] == "conflict", answer
    assert "has a password already" in answer["error"]["message"] and "join" not in answer
    assert bind_as_machine(samba, request["hostname"].upper(),
                           "Joined-0123456789abcdefABCDEF").bound
    assert store(service).raw(request["instance-id"]) is None


def test_a_name_ad_refuses_gets_an_error_answer(service: VendordataServer,
                                                samba: SambaServer) -> None:
    host = "win-" + uuid.uuid4().hex[:12]  # 16 characters: over NetBIOS's 15
    answer = service.settle(body(host, "windows")).json()
    assert answer["error"]["code"] == "refused_name"
    assert "at most 15" in answer["error"]["message"]
    assert show(samba, host.upper()) is None


def test_bad_requests_are_400_with_the_field_named(service: VendordataServer) -> None:
    answer = service.post(body("x", "windows", **{"instance-id": "not-a-uuid"}))
    assert answer.status_code == 400
    assert "instance-id" in answer.json()["error"]["message"]
    raw = requests.post(service.url, data=b"{not json", verify=str(service.ca_file),
                        auth=(service.username, service.password), timeout=10)
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "bad_request"


def test_a_deleted_instance_loses_its_account_and_gets_no_credential(
        service: VendordataServer, samba: SambaServer) -> None:
    from tasks.backends.directory.ad import AdDirectory
    from tasks.vendordata.request import parse
    settings = load_settings(str(service.config_path))
    host = name("del-")
    request = body(host, "windows")
    password = service.settle(request).json()["join"]["machine_password"]
    assert show(samba, host.upper()) is not None
    # What the delete chain's ldap.deregister does (tasks/base.py StepTask.deregister):
    # tombstone in the ledger, then the driver removes what belongs to the instance.
    event = parse(json.dumps(request).encode(), settings.vendordata)
    Ledger(service.ledger_url).tombstone(event.uuid, host)
    AdDirectory(settings.directory).deregister(event)
    assert show(samba, host.upper()) is None
    assert not bind_as_machine(samba, host.upper(), password).bound
    answer = service.settle(request).json()
    assert answer["error"]["code"] == "deleted" and "join" not in answer
    assert store(service).raw(request["instance-id"]) is None


def test_a_vm_policy_leaves_out_gets_no_registration(service: VendordataServer,
                                                     samba: SambaServer) -> None:
    host = name("out-")
    answer = service.settle(body(host, "windows", metadata={
        "os_type": "windows", "novahooks:register": "false"})).json()
    assert answer["registered"] is False and "join" not in answer
    assert "novahooks:register=false" in answer["rule"]
    assert show(samba, host.upper()) is None


def test_check_reports_the_service(service: VendordataServer, tmp_path: Path) -> None:
    from tasks.vendordata.probe import probe
    from tasks.errors import AuthFailed
    settings = load_settings(str(service.config_path))
    assert "refuses anonymous callers" in probe(settings)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    bad = load_settings(str(service.config_path),
                        environ={"NOVAHOOKS_VENDORDATA_PASSWORD_FILE": str(wrong)})
    with pytest.raises(AuthFailed, match="refuses"):
        probe(bad)
    other_ca = load_settings(str(service.config_path), environ={
        "NOVAHOOKS_VENDORDATA_CA_FILE": str(samba_ca(service))})
    with pytest.raises(AuthFailed, match="TLS not verified"):
        probe(other_ca)
    from tasks.errors import BackendUnavailable
    from tests.servers.base import free_port
    closed = load_settings(str(service.config_path), environ={
        "NOVAHOOKS_VENDORDATA_URL": "https://127.0.0.1:%d" % free_port()})
    with pytest.raises(BackendUnavailable, match="unreachable"):
        probe(closed)


def samba_ca(service: VendordataServer) -> str:
    """A CA that did not sign the service's certificate: the DC's."""
    settings = load_settings(str(service.config_path))
    return str(settings.directory.ca_file)


def test_novahooks_check_has_a_vendordata_row(service: VendordataServer) -> None:
    """The operator's command, as a process: the row says reachable, TLS and auth."""
    import subprocess
    import sys
    from tests.servers.vendordata import ROOT
    result = subprocess.run([sys.executable, "-m", "novahooks.cli", "--config",
                             str(service.config_path), "check", "--json"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    rows = {row["check"]: row for row in json.loads(result.stdout)}
    assert rows["vendordata"]["ok"], rows["vendordata"]
    assert "verified TLS; refuses anonymous callers, accepts user nova" in \
        rows["vendordata"]["detail"]
    assert rows["directory"]["ok"], rows["directory"]  # the same DC, through the AD driver
