"""The RFC 2136 driver against Samba AD's own DNS server, with unsigned updates allowed.

Samba's DNS verifies only GSS-TSIG, so the driver reaches it with
``allow_unsigned``; the fixture's DC has ``allow dns updates = nonsecure``.
The DNS contract runs here as on BIND, read back by querying Samba; what it
does not cover (the unsigned-update switch) stays below.
"""

import itertools
import logging
from typing import Any

import pytest

from novahooks.settings import DnsSettings, Secret
from tasks.backends.dns.rfc2136 import Rfc2136Dns
from tasks.errors import Misconfigured
from tests.servers.base import free_port
from tests.servers.samba import SambaServer
from tests.tasks.backends.dns_contract import DnsContract, DnsSpace, QueryReader

_serial = itertools.count(120)


def address() -> str:
    """An address in the fixture's reverse zone (10.0.2.0/24) no other test here uses."""
    return "10.0.2.%d" % next(_serial)


def dns_settings(samba: SambaServer, **over: Any) -> DnsSettings:
    values = {"server": samba.address, "port": 53, "zone": samba.zone,
              "reverse_zones": [samba.reverse_zone], "allow_unsigned": True, "timeout": 3.0}
    values.update(over)
    return DnsSettings(values)


class TestRfc2136OnSamba(DnsContract):
    @pytest.fixture
    def dns(self, samba: SambaServer) -> Rfc2136Dns:
        return Rfc2136Dns(dns_settings(samba))

    @pytest.fixture
    def dns_space(self, samba: SambaServer) -> DnsSpace:
        return DnsSpace(samba.zone, address)  # the DC has no IPv6 reverse zone

    @pytest.fixture
    def dns_reader(self, samba: SambaServer) -> QueryReader:
        return QueryReader(samba.address, 53, samba.zone)

    @pytest.fixture
    def dns_bad_credentials(self, samba: SambaServer) -> Rfc2136Dns:
        """A TSIG key Samba does not know: a signed update, which Samba refuses, rather
        than a silent fall-back to unsigned."""
        return Rfc2136Dns(dns_settings(samba, tsig_key_name="novahooks",
                                       tsig_secret=Secret("c2VjcmV0c2VjcmV0c2VjcmV0")))

    @pytest.fixture
    def dns_unreachable(self, samba: SambaServer) -> Rfc2136Dns:
        return Rfc2136Dns(dns_settings(samba, port=free_port(), timeout=1.0))


def test_unsigned_updates_stay_refused_by_default(samba: SambaServer) -> None:
    with pytest.raises(Misconfigured, match="refusing to send unsigned updates"):
        Rfc2136Dns(dns_settings(samba, allow_unsigned=False))


def test_allowing_unsigned_updates_warns_at_start(samba: SambaServer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="novahooks.dns"):
        driver = Rfc2136Dns(dns_settings(samba))
    assert any(r.levelno == logging.WARNING and "UNSIGNED" in r.getMessage()
               for r in caplog.records)
    assert "UNSIGNED" in driver.check()
