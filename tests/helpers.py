"""Small helpers the integration tests share: waiting for a condition, reading the audit."""

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List


def until(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition",
          interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something true; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("%s not reached in %.0f s (last: %r)" % (what, timeout, last))


def audit_lines(path: Path, instance_uuid: str) -> List[Dict[str, Any]]:
    """The audit records of one instance, in order."""
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines())
            if r.get("instance_uuid") == instance_uuid]


def audited(path: Path, instance_uuid: str, kind: str, stage: str = "done") -> bool:
    """The chain of ``kind`` for this instance wrote its closing audit record."""
    return any(r["stage"] == stage and r["kind"] == kind for r in audit_lines(path, instance_uuid))


def assert_registered_everywhere(vm: Any, hosts_base: str, timeout: float = 90.0) -> Dict[str, Any]:
    """Wait until every backend holds the VM (tests.demo.holdings), then check each one:
    DNS holds exactly its addresses with PTRs to its name, one LDAP entry, IPAM its
    addresses, an active inventory record. Returns what the backends hold."""
    from tests.demo import holdings, registered
    state = until(lambda: registered(vm, holdings(vm)) and holdings(vm), timeout, vm.hostname)
    addresses = sorted(a for a, _ in vm.addresses)
    assert sorted(state["dns"]["A"] + state["dns"]["AAAA"]) == addresses
    fqdn = "%s.cloud.example.test." % vm.hostname
    assert all(v == [fqdn] for v in state["dns"]["PTR"].values())
    assert state["ldap"] == ["cn=%s,%s" % (vm.hostname, hosts_base)]
    assert sorted(a.split("/")[0] for a in state["ipam"]) == addresses
    assert state["inventory"]["status"] == "active"
    return state


@contextlib.contextmanager
def hooks_into(config_path: Path, monkeypatch: Any) -> Iterator[None]:
    """Hooks fired in this process write to the outbox of the stack configured here
    (whose relay reads it), for the length of the block."""
    from novahooks.nova import hooks
    monkeypatch.setenv("NOVAHOOKS_CONFIG", str(config_path))
    hooks.reset_outbox()
    try:
        yield
    finally:
        hooks.reset_outbox()


def fire_into(clone: str) -> Any:
    """A ``fire`` fixture for a module whose fixture ``clone`` is a stack of its own
    (tests.conftest.pipeline): the test's hook calls write to that stack's outbox,
    which its relay reads."""
    import pytest

    @pytest.fixture
    def fire(request: Any, monkeypatch: Any) -> Iterator[None]:
        with hooks_into(request.getfixturevalue(clone).config_path, monkeypatch):
            yield
    return fire
