"""The hook side inside a real Nova environment: Python 3.8, Ussuri's pins, eventlet, and
real Nova 21.2.4 booting servers through its REST API with the worker side running."""

import json
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from tests.demo import gone, holdings, registered
from tests.servers.stack import Processes, Stack
from tasks.simulate import Vm
from tests.conftest import ROOT
from tests.nova.venv import ensure_nova_venv, install_novahooks, venv_python
from tests.helpers import until


@pytest.fixture(scope="module")
def nova_python() -> Path:
    venv = ensure_nova_venv(lambda line: print(line, flush=True))
    install_novahooks(venv, ROOT)
    return venv_python(venv)


def test_hook_side_is_stdlib_only_and_safe_under_eventlet_and_many_processes(
        nova_python: Path, tmp_path: Path) -> None:
    env = {"NOVAHOOKS_OUTBOX_PATH": str(tmp_path / "outbox.sqlite"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(nova_python), str(ROOT / "tests/nova/hookside_py38.py")],
                         env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["python"].startswith("3.8")
    assert report["eventlet_patched"]
    assert report["third_party"] == [], "hook side imported non-stdlib modules"
    assert report["events"] == report["expected"] == report["distinct"]


class NovaProcess(object):
    """Drives tests/nova/boot_servers.py over its line protocol."""

    def __init__(self, python: Path, stack: Stack) -> None:
        self.proc = subprocess.Popen(
            [str(python), str(ROOT / "tests/nova/boot_servers.py"), "--servers", "[]",
             "--log", str(stack.workdir / "logs" / "nova.log")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=stack.env(), cwd=str(ROOT), universal_newlines=True, bufsize=1)
        ready = self.read()
        assert ready["event"] == "ready", ready

    def read(self) -> Dict[str, Any]:
        line = self.proc.stdout.readline()
        assert line, "Nova harness exited with %s" % self.proc.poll()
        return json.loads(line)

    def send(self, command: str) -> Dict[str, Any]:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send("quit")
            self.proc.wait(60)


@pytest.fixture
def nova(nova_python: Path, stack: Stack) -> Iterator[NovaProcess]:
    process = NovaProcess(nova_python, stack)
    yield process
    process.close()


def vm_of(server: Dict[str, Any], os_type: str) -> Vm:
    addresses = tuple((a["addr"], a["OS-EXT-IPS-MAC:mac_addr"])
                      for network in server["addresses"].values() for a in network)
    return Vm(server["hostname"], addresses, os_type=os_type, uuid=server["id"])


def test_real_nova_boot_and_delete_registers_and_removes_everything(
        nova: NovaProcess, stack: Stack, processes: Processes) -> None:
    booted = []
    for name, os_type, ip in (("nova-lin-1", "linux", "192.168.1.41"),
                              ("nova-win-1", "windows", "192.168.1.42")):
        reply = nova.send("boot " + json.dumps({"name": name, "fixed_ip": ip,
                                                "metadata": {"os_type": os_type}}))
        assert reply["event"] == "active", reply
        booted.append(vm_of(reply["server"], os_type))
    for vm in booted:
        assert vm.addresses, "Nova gave %s no address" % vm.hostname
        state = until(lambda vm=vm: registered(vm, holdings(vm)) and holdings(vm), 90,
                      "%s registered" % vm.hostname)
        assert state["ldap"] == ["cn=%s,%s" % (vm.hostname, stack.slapd.hosts_base)]
        assert state["dns"]["A"] == [vm.addresses[0][0]]
        assert state["inventory"]["name"] == vm.hostname
        until(lambda vm=vm: any(r["instance_uuid"] == vm.uuid and r["stage"] == "done"
                                and r["source"] == "hook:build_instance"
                                for r in map(json.loads,
                                             stack.audit_path.read_text().splitlines())),
              30, "audit record of %s's build" % vm.hostname)
    for vm in booted:
        reply = nova.send("delete %s" % vm.uuid)
        assert reply["event"] == "deleted", reply
    for vm in booted:
        until(lambda vm=vm: gone(vm, holdings(vm)), 90, "%s removed" % vm.hostname)
