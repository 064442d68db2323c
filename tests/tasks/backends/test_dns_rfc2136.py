"""The RFC 2136 driver against a real BIND: the DNS contract, read back by querying BIND.

What the contract does not cover stays here: a second reverse zone, and the
refusal to send unsigned updates.
"""

import time
from typing import Any, Dict

import pytest

from novahooks.event import Address
from novahooks.settings import Settings, load_settings
from tasks.backends.dns.rfc2136 import Rfc2136Dns
from tasks.errors import Misconfigured
from tests.conftest import unique_v4, unique_v6
from tests.servers.base import free_port
from tests.servers.stack import FORWARD_ZONE, Stack
from tests.tasks.backends.dns_contract import DnsContract, DnsSpace, QueryReader
from tests.tasks.backends.driver_fixtures import driver_fixtures, env, from_stack


@pytest.fixture
def reader(stack: Stack) -> QueryReader:
    return QueryReader("127.0.0.1", stack.bind.port, FORWARD_ZONE, stack.bind.key_name,
                       stack.bind.key_secret, stack.bind.key_algorithm)


def another_tsig_secret(request: Any) -> Dict[str, str]:
    secret = request.getfixturevalue("tmp_path") / "bad"
    secret.write_text("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=")
    return env("dns", tsig_secret_file=str(secret))


class TestRfc2136OnBind(driver_fixtures(
        "dns", from_stack("dns", Rfc2136Dns), another_tsig_secret,
        lambda request: env("dns", port=str(free_port()), timeout="1"),
        reader=lambda request: request.getfixturevalue("reader")), DnsContract):
    @pytest.fixture
    def dns_space(self) -> DnsSpace:
        return DnsSpace(FORWARD_ZONE, unique_v4, unique_v6)


def test_ptr_in_the_192_168_reverse_zone(settings: Settings, reader: QueryReader) -> None:
    driver = Rfc2136Dns(settings.dns)
    driver.register("dns-i.cloud.example.test", "12121212-1212-1212-1212-121212121212",
                    [Address("192.168.1.77", 4)])
    assert reader.ptr("192.168.1.77") == ["dns-i.cloud.example.test"]
    driver.deregister("dns-i.cloud.example.test", "12121212-1212-1212-1212-121212121212", [])
    assert reader.ptr("192.168.1.77") == []


def test_unsigned_configuration_is_refused(stack: Stack) -> None:
    settings = load_settings(str(stack.config_path), {"NOVAHOOKS_DNS_TSIG_SECRET": ""})
    with pytest.raises(Misconfigured, match="unsigned"):
        Rfc2136Dns(settings.dns)


def test_a_clock_beyond_the_tsig_fudge_is_a_transient_error_that_says_so(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """BIND refuses a TSIG signed more than 300 s off its clock (BADTIME): a worker host
    whose clock is that far off retries and is told why, rather than being sent to
    check a key that is right."""
    import types

    import dns.message

    from tasks.errors import BackendUnavailable
    behind = types.SimpleNamespace(time=lambda: time.time() - 400)
    monkeypatch.setattr(dns.message, "time", behind)  # only the TSIG's signing time
    driver = Rfc2136Dns(load_settings(str(stack.config_path)).dns)
    with pytest.raises(BackendUnavailable, match="clock .* differ by more than the TSIG"):
        driver.register("skewed-%s.%s" % (free_port(), FORWARD_ZONE.rstrip(".")),
                        "00000000-0000-4000-8000-00000000beef",
                        [Address(unique_v4(), 4)])
