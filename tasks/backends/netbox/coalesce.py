"""NetBox's side of the group commit (tasks/backends/coalesce.py): its list endpoints
take writes of several VMs merged, and reads of IP addresses by address
(``?address=...``: the "held by another?" of the IPAM preflight and of
``ipam.reserve``) meet the same way: one GET for every address of the steps that
waited, each step getting the records of its own addresses, as NetBox would have
answered it alone. Other reads go out at once.
"""

import ipaddress
import json
from typing import Any, List, Optional, Tuple

import requests

from tasks.backends.coalesce import Coalescer, Part, copy_response

#: the filter of IP address reads that several steps' reads share in one GET
LOOKUP = "address"
#: one page for a merged read (NetBox's MAX_PAGE_SIZE default): more, and each goes alone
PAGE = 1000


class NetBoxCoalescer(Coalescer):
    """Merged list writes, and merged reads of addresses; one per NetBox session."""

    def lookup(self, url: str, **kwargs: Any) -> requests.Response:
        """GET ``url`` filtered by ``address``, merged with such reads waiting beside it.

        Only plain addresses are merged (what each caller gets back is the records of
        its own, compared as addresses); a read with any other value goes alone.
        """
        params = dict(kwargs.get("params") or {})
        values = params.pop(LOOKUP, None)
        values = [values] if isinstance(values, str) else list(values or [])
        if self.batch_size <= 1 or not values or \
                not all("/" not in str(v) and _host(str(v)) for v in values):
            return self._send("GET", url, **kwargs)
        params.pop("limit", None)
        params.pop("offset", None)
        key = ("GET", url) + tuple(sorted("%s=%s" % (k, v) for k, v in params.items()))
        return self._gather(key, Part(values, kwargs), self._flush_lookup)

    def _flush_lookup(self, key: Tuple[str, ...], batch: List[Part]) -> None:
        """One GET for every address of ``batch``; each part gets the records of its own.

        An answer of more than one page, or not NetBox's page shape, is no answer to
        split: then each part sends its own read.
        """
        url = key[1]
        if len(batch) == 1:
            self._alone("GET", url, batch[0])
            return
        kwargs = dict(batch[0].kwargs)
        params = dict(kwargs.get("params") or {})
        params.update({LOOKUP: sorted({v for part in batch for v in part.items}),
                       "limit": PAGE})
        params.pop("offset", None)
        kwargs["params"] = params
        try:
            response = self._send("GET", url, **kwargs)
            page = response.json() if response.ok else None
        except ValueError:
            page = None
        except BaseException as exc:  # noqa: BLE001 - each step translates it as its own
            for part in batch:
                part.error, part.done = exc, True
            return
        results = page.get("results") if isinstance(page, dict) else None
        if not isinstance(page, dict) or not isinstance(results, list) or page.get("next") or \
                not all(_host(str(r.get("address", ""))) for r in results):
            for part in batch:
                self._alone("GET", url, part)
            return
        for part in batch:
            wanted = {_host(v) for v in part.items}
            mine = [r for r in results if _host(str(r["address"])) in wanted]
            body = {"count": len(mine), "next": None, "previous": None, "results": mine}
            part.response, part.done = copy_response(response, json.dumps(body).encode()), True


def _host(value: str) -> Optional[str]:
    """An address (with or without a prefix length) as one spelling, None if it is none."""
    try:
        return str(ipaddress.ip_interface(value).ip) if value else None
    except ValueError:
        return None


