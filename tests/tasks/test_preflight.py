"""tasks/preflight.py without servers: which addresses are no host's, a backend that
does not answer is not waited for (its own step retries), while a refusal is raised, and
which step asks IPAM (the in-memory IPAM backend, as the memory driver keeps it).
Against real servers: tests/test_hostile_chain.py."""

import ipaddress
import math
import uuid
from typing import Dict, List

import pytest

from novahooks.event import Address
from novahooks.settings import IpamSettings
from tasks import chains, drivers, preflight
from tasks.backends import memory
from tasks.backends.ipam.memory import IpamStore, MemoryIpam
from tasks.errors import BackendUnavailable, Conflict, InvalidEvent, OutOfScope
from tasks.policy import Decision
from tests.conftest import make_event, unique_v4


@pytest.mark.parametrize("address,network,problem", [
    ("10.20.0.0", "10.20.0.0/16", "network address"),
    ("10.20.255.255", "10.20.0.0/16", "broadcast address"),
    ("10.20.1.0", "10.20.0.0/16", None),           # a host of a /16
    ("192.168.1.255", "192.168.1.0/24", "broadcast address"),
    ("10.0.0.0", "10.0.0.0/31", None),             # RFC 3021: both are hosts
    ("2001:db8::", "2001:db8::/64", None),         # IPv6 has no broadcast
    ("10.20.0.0", None, None),                     # the IPAM driver does not know
])
def test_network_and_broadcast_addresses(address: str, network: str, problem: str) -> None:
    net = ipaddress.ip_network(network) if network else None
    found = preflight.host_problem(address, net)
    assert (found is None) if problem is None else (problem in found)


def test_a_backend_that_does_not_answer_is_skipped_for_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "_down_until", {})
    calls: List[str] = []

    def down() -> None:
        calls.append("down")
        raise BackendUnavailable("timeout", backend="dns")
    preflight._ask("dns", down)
    preflight._ask("dns", down)
    assert calls == ["down"], "asked again within DOWN_FOR"
    preflight._down_until["dns"] = 0.0

    def refusing() -> None:
        raise Conflict("held by another", backend="dns")
    with pytest.raises(Conflict):
        preflight._ask("dns", refusing)


def test_the_build_chains_first_step_asks_what_ipam_would_refuse(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """dns.register writes first and ipam.reserve third: the first asks IPAM's refusals."""
    url = "memory://preflight-%s" % uuid.uuid4().hex
    memory.backend(IpamStore, url).prefixes = ["10.20.0.0/16"]
    ipam = MemoryIpam(IpamSettings({"url": url}))
    monkeypatch.setattr(drivers, "ipam", lambda: ipam)
    # DNS and the directory count as not answering: only IPAM is asked here.
    monkeypatch.setattr(preflight, "_down_until", {"dns": math.inf, "directory": math.inf})
    taken, fresh = unique_v4(), unique_v4()
    holder = make_event()
    ipam.ensure(holder.uuid, "holder.cloud.example.test", [Address(taken, 4)])
    assert chains.CREATE[0] == preflight.FIRST_WRITER == "dns.register"

    def ask(step: str, *addresses: str) -> Dict[str, float]:
        event = make_event(addresses=[Address(a, 4) for a in addresses])
        return preflight.run(step, event, Decision(True, "test", event.hostname,
                                                   "%s.cloud.example.test" % event.hostname))
    took = ask("dns.register", fresh)
    assert list(took) == ["ipam"] and took["ipam"] >= 0, "the step's log shows what it asked"
    with pytest.raises(Conflict, match=holder.uuid):
        ask("dns.register", fresh, taken)
    refused = make_event(addresses=[Address(taken, 4)])
    took: Dict[str, float] = {}
    with pytest.raises(Conflict):
        preflight.run("dns.register", refused, Decision(
            True, "test", refused.hostname, "%s.cloud.example.test" % refused.hostname), took)
    assert list(took) == ["ipam"], "a refusal's log line still says what was asked"
    with pytest.raises(OutOfScope, match="172.30.1.1"):
        ask("dns.register", fresh, "172.30.1.1")
    with pytest.raises(InvalidEvent, match="broadcast address of 10.20.0.0/16"):
        ask("dns.register", fresh, "10.20.255.255")
    for later in ("ldap.register", "ipam.reserve", "inventory.register"):
        assert ask(later, fresh, taken) == {}  # they check when they write, not ahead
    assert memory.backend(IpamStore, url).held_by(holder.uuid) == [taken]
    assert memory.backend(IpamStore, url).addresses.keys() == {taken}
