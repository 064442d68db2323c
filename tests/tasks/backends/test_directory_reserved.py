"""Names a tenant must not get as an AD computer account, against the real Samba AD DC.

Samba created ``KRBTGT$``, ``ADMINISTRATOR$``, ``GUEST$`` and the domain's own NetBIOS
name as computer accounts (issue 19): the conflict check searched ``NAME$`` only. Each is
refused now, by the static check every step runs or by the driver's read of the domain
(preflight, which the chain's first step runs, and register), and samba-tool then finds no
such computer. An existing account without "$" (a user ``svc-...``) blocks ``SVC-...$`` too.
"""

import uuid

import pytest

from novahooks.settings import DirectorySettings
from tasks.backends.directory.ad import AdDirectory
from tasks.errors import Conflict, InvalidEvent
from tests.servers.samba import SambaServer
from tests.tasks.backends.test_directory_ad import ad_settings, show, windows


@pytest.fixture
def driver(samba: SambaServer) -> AdDirectory:
    return AdDirectory(ad_settings(samba))


@pytest.mark.parametrize("hostname", ["krbtgt", "Administrator", "GUEST"])
def test_builtin_account_names_are_refused_before_ad_is_asked(
        samba: SambaServer, driver: AdDirectory, hostname: str) -> None:
    event = windows(hostname)
    with pytest.raises(InvalidEvent, match="reserved"):
        AdDirectory.precheck(driver.settings, event)
    for call in (driver.preflight, driver.register):
        with pytest.raises(InvalidEvent, match="reserved"):
            call(event)
    assert show(samba, hostname.upper() + "$") is None


def test_the_domains_netbios_name_is_refused(samba: SambaServer, driver: AdDirectory) -> None:
    event = windows(samba.domain.lower())
    for call in (driver.preflight, driver.register):
        with pytest.raises(Conflict, match="NetBIOS name"):
            call(event)
    assert show(samba, samba.domain + "$") is None


def test_an_account_without_dollar_blocks_the_computer_name(
        samba: SambaServer, driver: AdDirectory) -> None:
    user = "svc-" + uuid.uuid4().hex[:6]
    samba.samba_tool("user", "create", user, "Pw-" + uuid.uuid4().hex, "--random-password")
    try:
        event = windows(user)
        for call in (driver.preflight, driver.register):
            with pytest.raises(Conflict, match="account %s exists" % user):
                call(event)
        assert show(samba, user.upper() + "$") is None
    finally:
        samba.samba_tool("user", "delete", user)


def test_configurable_reserved_names(samba: SambaServer) -> None:
    settings = ad_settings(samba, reserved_names=["print-01"])
    assert isinstance(settings, DirectorySettings)
    with pytest.raises(InvalidEvent, match="reserved"):
        AdDirectory(settings).preflight(windows("PRINT-01"))
    AdDirectory(settings).preflight(windows("win-" + uuid.uuid4().hex[:6]))  # others pass
