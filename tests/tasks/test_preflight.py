"""tasks/preflight.py without servers: which addresses are no host's, and a backend that
does not answer is not waited for (its own step retries), while a refusal is raised."""

import ipaddress
from typing import List

import pytest

from tasks import preflight
from tasks.errors import BackendUnavailable, Conflict


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
