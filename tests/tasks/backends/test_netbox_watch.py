"""``[ipam] preflight_watch``: the IPAM preflight answers "held by another?" from the
process's copy of its prefix (tasks/backends/netbox/watch.py), against a real NetBox:
new addresses cost no read, an address recorded after the copy was made is refused
once the copy has refreshed, and an address the copy holds is read, never refused
on the copy's word alone."""

from typing import Any, Dict, Iterator, List

import pynetbox
import pytest

from novahooks.event import Address
from novahooks.settings import load_settings
from tasks.backends.ipam.netbox import NetBoxIpam
from tasks.backends.netbox.client import UUID_FIELD, ensure_custom_fields
from tasks.errors import Conflict
from tests.conftest import make_event, unique_v4
from tests.helpers import until
from tests.servers.base import free_port
from tests.servers.stack import Stack

FQDN = "watch.cloud.example.test"
PREFIX = "10.20.0.0/16"  # unique_v4's, in the stack's NetBox
INTERVAL = 0.5


@pytest.fixture(scope="module")
def api(stack: Stack) -> pynetbox.api:
    return pynetbox.api(stack.netbox.url, token=stack.netbox.token)


@pytest.fixture
def ipam(stack: Stack) -> Iterator[NetBoxIpam]:
    """A driver whose copy of the prefix is made and refreshed once at least."""
    settings = load_settings(str(stack.config_path),
                             {"NOVAHOOKS_IPAM_PREFLIGHT_WATCH": str(INTERVAL)})
    driver = NetBoxIpam(settings.ipam)
    ensure_custom_fields(driver.api)  # the records of other instances below carry it
    assert driver._watch is not None
    probe = unique_v4()
    assert not driver._watch.free(probe, PREFIX), "no copy yet: the address is read"
    driver.preflight(make_event().uuid, FQDN, [Address(probe, 4)])  # and the prefixes
    until(lambda: driver._watch.free(probe, PREFIX), 60, "the copy of %s" % PREFIX)
    yield driver
    driver._watch.stop()


def _requests(driver: NetBoxIpam) -> List[str]:
    asked: List[str] = []
    driver.api.http_session.hooks["response"].append(
        lambda response, *args, **kwargs: asked.append(response.request.method))
    return asked


def _recorded_by_other(api: pynetbox.api, address: str) -> Any:
    owner: Dict[str, Any] = {UUID_FIELD: make_event().uuid}
    return api.ipam.ip_addresses.create(address=address + "/16", status="active",
                                        custom_fields=owner)


def test_new_addresses_are_answered_without_a_read(ipam: NetBoxIpam) -> None:
    asked = _requests(ipam)
    ipam.preflight(make_event().uuid, FQDN, [Address(unique_v4(), 4) for _ in range(5)])
    assert asked == []


def test_an_address_recorded_after_the_copy_is_refused_once_it_refreshed(
        api: pynetbox.api, ipam: NetBoxIpam) -> None:
    """The refresh reads changes only (``last_updated__gte``): the new record is in it."""
    taken = unique_v4()
    record = _recorded_by_other(api, taken)
    try:
        until(lambda: not ipam._watch.free(taken, PREFIX), 30, "the copy to hold %s" % taken)
        asked = _requests(ipam)
        with pytest.raises(Conflict, match="%s.*instance %s" % (
                taken, record.custom_fields[UUID_FIELD])):
            ipam.preflight(make_event().uuid, FQDN, [Address(taken, 4),
                                                      Address(unique_v4(), 4)])
        assert asked == ["GET"], "the held address is read, the new one is not"
    finally:
        record.delete()


def test_an_address_deleted_since_the_copy_is_read_and_passes(
        api: pynetbox.api, ipam: NetBoxIpam) -> None:
    gone = unique_v4()
    record = _recorded_by_other(api, gone)
    until(lambda: not ipam._watch.free(gone, PREFIX), 30, "the copy to hold %s" % gone)
    record.delete()
    asked = _requests(ipam)
    assert ipam.preflight(make_event().uuid, FQDN, [Address(gone, 4)]) is None
    assert asked == ["GET"]
    assert not ipam._watch.free(gone, PREFIX), "kept until the prefix is listed again"


def test_a_copy_that_stops_refreshing_vouches_for_nothing(ipam: NetBoxIpam) -> None:
    """NetBox not answering the refresh (here: a port nothing listens on) leaves the
    copy as it was: after 3 intervals it is too old, and every address is read."""
    watch = ipam._watch
    probe = unique_v4()
    assert watch.free(probe, PREFIX)
    watch.endpoint = pynetbox.api("http://127.0.0.1:%d" % free_port(),
                                  token="unused").ipam.ip_addresses  # nothing listens
    until(lambda: not watch.free(probe, PREFIX), 30, "the copy to go stale")
    asked = _requests(ipam)
    ipam.preflight(make_event().uuid, FQDN, [Address(probe, 4)])
    assert asked == ["GET"]

