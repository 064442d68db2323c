"""Steps running at once in one worker send their WAPI ``request`` objects merged into
one (tasks/backends/coalesce.py), against the WAPI stand-in, checked over WAPI directly:
each VM gets its own records, a VM the grid refuses fails alone and leaves nothing, a
lone step is not held."""

import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from novahooks.event import Address
from novahooks.settings import Settings
from tasks.backends.dns.infoblox import InfobloxDns
from tasks.backends.ipam.infoblox import InfobloxIpam
from tasks.errors import StepError
from tests.conftest import make_event, unique_v4, unique_v6
from tests.servers.wapi import WapiServer
from tests.tasks.backends.coalescing import at_once, hold_first
from tests.tasks.backends.test_infoblox import (REVERSE_ZONES, ZONE, Grid, configure,
                                                dns_held, grid, wapi)

__all__ = ["grid", "wapi"]  # the stand-in and its admin session, as test_infoblox has them
#: batch_wait of the tests that hold a first request: longer than the hold may last
HOLD_MS = 90000
NOTHING: Dict[str, List[str]] = {"A": [], "AAAA": [], "PTR": []}


def _dns(wapi: WapiServer, tmp_path: Path, **extra: str) -> InfobloxDns:
    settings = configure(wapi, tmp_path, **extra)
    settings.dns.batch_wait = HOLD_MS
    driver = InfobloxDns(settings.dns)
    driver.wapi.ensure_uuid_attribute()  # once per grid and process
    return driver


def _writes(method: str, body: Any) -> bool:
    return isinstance(body, list) and any(call.get("method") != "GET" for call in body)


def _sent(driver: Any) -> List[Tuple[str, int]]:
    """Each request object the driver's WAPI session sends: "searches" or "writes", and
    how many calls it carries."""
    seen: List[Tuple[str, int]] = []

    def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
        if response.request.path_url.split("?")[0].endswith("/request"):
            body = json.loads(response.request.body)
            seen.append(("writes" if _writes("POST", body) else "searches", len(body)))
        return response
    driver.wapi.session.hooks["response"].append(hook)
    return seen


def _vm() -> Any:
    return make_event(addresses=[Address(unique_v4(), 4), Address(unique_v6(), 6)])


def _records(fqdn: str, event: Any) -> Dict[str, List[str]]:
    v4, v6 = event.addresses[0].address, event.addresses[1].address
    return {"A": ["%s=%s" % (fqdn, v4)], "AAAA": ["%s=%s" % (fqdn, v6)],
            "PTR": sorted(["%s=%s" % (fqdn, v4), "%s=%s" % (fqdn, v6)])}


def test_registers_at_once_share_request_objects_and_each_gets_its_records(
        wapi: WapiServer, grid: Grid, tmp_path: Path) -> None:
    """8 VMs' dns.register at once, the first's searches answered only once the 7 others'
    wait behind them: alone they take 16 requests (one of searches, one of writes each)."""
    driver = _dns(wapi, tmp_path)
    sent = _sent(driver)
    lone, lone_name = _vm(), "ib-alone.%s" % ZONE
    driver.register(lone_name, lone.uuid, lone.addresses)
    [(_, searches), (_, writes)] = sent
    del sent[:]
    events = [_vm() for _ in range(8)]
    names = ["ib-at-once-%d.%s" % (i, ZONE) for i in range(8)]
    hold_first(driver.wapi.coalescer, 7, lambda method, body: not _writes(method, body))
    results = at_once([lambda e=e, f=f: driver.register(f, e.uuid, e.addresses)
                       for e, f in zip(events, names)])
    assert all(not isinstance(r, Exception) for r in results), results
    assert ("searches", 7 * searches) in sent, "the 7 behind the first as one: %r" % sent
    assert sum(n for kind, n in sent if kind == "writes") == 8 * writes, sent
    assert len(sent) <= 5, sent
    for event, fqdn in zip(events, names):
        assert dns_held(grid, event.uuid) == _records(fqdn, event)
    del sent[:]
    gone = at_once([lambda e=e, f=f: driver.deregister(f, e.uuid, e.addresses)
                    for e, f in zip(events + [lone], names + [lone_name])])
    assert all(not isinstance(g, Exception) for g in gone), gone
    assert len(sent) < 18, sent
    for event in events + [lone]:
        assert dns_held(grid, event.uuid) == NOTHING


def test_a_vm_the_grid_refuses_fails_alone_and_leaves_nothing(
        wapi: WapiServer, grid: Grid, tmp_path: Path) -> None:
    """192.168.1.0/24 is in scope by [dns] reverse_zones but the grid has no reverse zone
    for it: that VM's PTR is refused. Its writes and two good VMs' wait behind a first
    VM's; the three as one request are refused as one transaction, each VM's writes go
    again alone, and only the bad VM fails, with none of its records kept."""
    driver = _dns(wapi, tmp_path, reverse_zones=REVERSE_ZONES + ", 168.192.in-addr.arpa")
    bad = make_event(addresses=[Address("192.168.1.%d" % (
        int(unique_v4().split(".")[-1]) % 250 + 2), 4)])
    events = [_vm() for _ in range(3)] + [bad]
    names = ["ib-refused-%d.%s" % (i, ZONE) for i in range(4)]
    sent = _sent(driver)
    held = hold_first(driver.wapi.coalescer, 3, _writes)
    results: List[Any] = [None] * 4
    lead = threading.Thread(target=lambda: results.__setitem__(
        0, driver.register(names[0], events[0].uuid, events[0].addresses)))
    lead.start()
    assert held.wait(30), "the first VM's writes were never sent"
    results[1:] = at_once([lambda e=e, f=f: driver.register(f, e.uuid, e.addresses)
                           for e, f in zip(events[1:], names[1:])])
    lead.join(60)
    assert isinstance(results[3], StepError) and "parent was not found" in str(results[3])
    assert dns_held(grid, bad.uuid) == NOTHING
    assert grid.get("record:a", name=names[3]) == []
    for event, fqdn, result in zip(events[:3], names[:3], results[:3]):
        assert not isinstance(result, Exception), result
        assert dns_held(grid, event.uuid) == _records(fqdn, event)
    writes = [n for kind, n in sent if kind == "writes"]
    assert writes[:2] == [4, 4 + 4 + 2] and sorted(writes[2:]) == [2, 4, 4], \
        "the first alone; 3 VMs' as one, refused; each again alone: %r" % sent
    for event, fqdn in zip(events[:3], names[:3]):
        driver.deregister(fqdn, event.uuid, event.addresses)


@pytest.fixture
def settings(wapi: WapiServer, tmp_path: Path) -> Settings:
    return configure(wapi, tmp_path)


def test_a_lone_step_is_never_held_for_others(grid: Grid, settings: Settings) -> None:
    """batch_wait is 5 s: IPAM's preflight and DNS's register and deregister, five
    requests with none ahead of them, take far less than the 25 s they would held."""
    settings.dns.batch_wait = settings.ipam.batch_wait = 5000
    driver, ipam = InfobloxDns(settings.dns), InfobloxIpam(settings.ipam)
    driver.wapi.ensure_uuid_attribute()
    event, fqdn = _vm(), "ib-lone.%s" % ZONE
    started = time.monotonic()
    ipam.preflight(event.uuid, fqdn, event.addresses)
    driver.register(fqdn, event.uuid, event.addresses)
    driver.deregister(fqdn, event.uuid, event.addresses)
    assert time.monotonic() - started < 5.0
    assert dns_held(grid, event.uuid) == NOTHING
