"""A process's copy of which addresses NetBox records in a prefix, kept fresh in the background.

In a burst the IPAM preflight's "held by another?" read, asked by ``dns.register``
(the build chain's first writer), waits in NetBox's queue behind the NetBox steps'
writes: 66-87 % of ``dns.register``'s time at p50 (bench/RESULTS.md section 15). A
build's addresses are almost always new to NetBox, so the answer is almost always
"no one". This copy gives that answer without a request; an address the copy holds,
or one it cannot vouch for, is read from NetBox as before. So:

* the first ask for a prefix lists its addresses (the ``address`` and
  ``last_updated`` fields only), in a thread of its own; until that is done, every
  address of the prefix is read as before;
* every ``interval`` seconds the thread reads what changed since
  (``last_updated`` >= the newest it saw, less :data:`OVERLAP`, for writes whose
  transaction committed late), and lists the whole prefix again every
  :data:`RELIST` seconds, which drops the addresses deleted since;
* an address is vouched for only if it is absent from a copy refreshed less than
  ``3 * interval`` seconds ago: a NetBox that stops answering makes the copy stale,
  and every address is read again;
* an address deleted since the last listing stays in the copy: it costs a read,
  never a false refusal. A prefix holding more than :data:`MOST` addresses is not
  copied (its addresses are read).

What this gives up (and why it is opt-in, ``[ipam] preflight_watch``): an address
that someone else records in NetBox after the copy's last refresh passes the
preflight. ``ipam.reserve`` reads when it writes and still refuses it, but after DNS
and the directory wrote (a dead letter, or undone under ``on_permanent_failure =
undo``). The window is the refresh interval plus the refresh's own time.
"""

import datetime
import logging
import os
import threading
import time
from typing import Any, Dict, Iterable, Optional, Set, Tuple

from tasks.backends.netbox import client

LOG = logging.getLogger("novahooks.netbox.watch")
#: how far back each refresh reads before the newest change it saw (seconds)
OVERLAP = 60.0
#: how often a prefix is listed whole again (seconds)
RELIST = 600.0
#: the largest prefix (in recorded addresses) a process keeps a copy of
MOST = 200000
FIELDS = "address,last_updated"


class _Copy(object):
    def __init__(self) -> None:
        self.held: Set[str] = set()
        self.newest: Optional[datetime.datetime] = None
        self.refreshed = 0.0  # monotonic; 0: never
        self.listed = 0.0
        self.too_big = False


def _when(value: Any) -> Optional[datetime.datetime]:
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


class PrefixWatch(object):
    """One per IPAM driver (NetBox client); its thread starts on the first ask."""

    def __init__(self, endpoint: Any, interval: float) -> None:
        self.endpoint = endpoint  # pynetbox's ipam.ip_addresses
        self.interval = max(0.1, float(interval))
        self._lock = threading.Lock()
        self._copies: Dict[str, _Copy] = {}
        self._pid = 0
        self._wake = threading.Event()
        self._stopped = threading.Event()

    def free(self, address: str, prefix: str) -> bool:
        """True when ``address`` (in ``prefix``, a CIDR) is surely not in NetBox as of the
        last refresh; False means "read it"."""
        with self._lock:
            self._start()
            copy = self._copies.get(prefix)
            if copy is None:
                self._copies[prefix] = _Copy()
                self._wake.set()
                return False
            fresh = time.monotonic() - copy.refreshed < 3 * self.interval
            return bool(copy.refreshed) and fresh and not copy.too_big \
                and address not in copy.held

    def _start(self) -> None:
        """A thread per process: one made before a fork does not run in the child."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._copies = {}
        threading.Thread(target=self._run, name="netbox-prefix-watch", daemon=True).start()

    def stop(self) -> None:
        """End the refreshes (a driver dropped before its process ends: the tests')."""
        self._stopped.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                prefixes = list(self._copies.items())
            for prefix, copy in prefixes:
                try:
                    self.refresh(prefix, copy)
                except Exception as exc:  # noqa: BLE001 - a stale copy is read around
                    LOG.warning("preflight watch: prefix %s not refreshed: %s", prefix, exc)
            self._wake.wait(self.interval)
            self._wake.clear()

    def refresh(self, prefix: str, copy: _Copy) -> None:
        """List the prefix (the first time and every RELIST seconds) or read its changes."""
        started = time.monotonic()
        if copy.listed and started - copy.listed <= RELIST:
            if not copy.too_big:
                self._changes(prefix, copy, started)
            return
        count = self.endpoint.count(parent=prefix)
        if count > MOST:
            copy.too_big, copy.listed = True, started
            return
        held, newest = self._read(self.endpoint.filter(parent=prefix, fields=FIELDS), None)
        with self._lock:
            copy.held, copy.newest = held, newest
            copy.listed = copy.refreshed = started
            copy.too_big = False

    def _changes(self, prefix: str, copy: _Copy, started: float) -> None:
        """What changed in the prefix since the newest change the copy saw."""
        assert copy.newest is not None  # set by every listing of a prefix not too big
        since = copy.newest - datetime.timedelta(seconds=OVERLAP)
        held, newest = self._read(self.endpoint.filter(
            parent=prefix, last_updated__gte=since.isoformat(), fields=FIELDS), copy.newest)
        with self._lock:
            copy.held |= held
            copy.newest = newest
            copy.refreshed = started

    @staticmethod
    def _read(records: Iterable[Any], newest: Optional[datetime.datetime]
              ) -> Tuple[Set[str], datetime.datetime]:
        held: Set[str] = set()
        for record in records:
            held.add(client.host(record.address))
            when = _when(getattr(record, "last_updated", None))
            if when is not None and (newest is None or when > newest):
                newest = when
        if newest is None:  # an empty prefix: from now, by this machine's clock
            newest = datetime.datetime.now(datetime.timezone.utc)
        return held, newest
