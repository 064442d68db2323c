"""A local stand-in for an Infoblox grid master's WAPI, for tests and demos only.

No NIOS appliance can run here, so this process answers the WAPI calls the
Infoblox drivers make (tasks/backends/infoblox, ipam/infoblox.py,
dns/infoblox.py) and the calls a test makes to seed a grid the way an admin
would (network views, networks, zones), over real HTTP on a loopback port,
keeping its state in memory. It is built from Infoblox's WAPI documentation
as served by grid masters:

* https://demogm1.infoblox.com/wapidoc/ and https://ipam.illinois.edu/wapidoc/
  (WAPI 2.10.5 / 2.12.3): Transport and Authentication (HTTP basic auth),
  General Syntax and Options (``_return_fields``, ``_return_fields+``,
  ``_max_results`` with its default of -1000, ``_paging``, ``_page_id``,
  ``_return_as_object``), Object Reference (``objtype/<id>:<name>/<view>``),
  Function Calls (``func:nextavailableip:<network>[,<network view>]``),
  Extensible Attributes (``*Name=value`` and ``*Name~=regex`` searches; an
  attribute must be defined before use), Error Handling (a JSON object with
  ``Error``, ``code`` and ``text``);
* objects/record.host.html, record.a.html, record.aaaa.html, record.ptr.html,
  record.cname.html, network.html, ipv6network.html, networkview.html,
  view.html, zone_auth.html (reverse zones named ``10.0.0.0/8``),
  extensibleattributedef.html: basic fields, searchable fields, required
  fields.

Error texts are those real grids answer, as recorded in public transcripts of
WAPI sessions (scoulomb/myDNS, infobloxopen/infoblox-client and
infoblox-go-client tests): ``The record 'x' already exists.``, ``The action
is not allowed. A parent was not found.``, ``Reference ... not found`` (404),
``Unknown extensible attribute: X``, ``field for create missing: name``, an
Apache HTML page with HTTP 401 for bad credentials, and a plain-text
``Version X not supported``.

Nothing is looser than the real WAPI: unknown or unsearchable fields, undefined
extensible attributes, records outside every zone and oversized result sets
are refused as NIOS refuses them.

Split by concern: ``errors`` (NIOS's error shape), ``schema`` (object types and fields),
``grid`` (state and write/search rules), ``http`` (the wire), ``server`` (start and stop).

Run: ``python -m tests.servers.wapi --port N --credentials-file F`` (F holds
``user:password``); :func:`start_wapi` does that and waits until it answers.
"""

from tests.servers.wapi.http import WAPI_VERSION
from tests.servers.wapi.server import WapiServer, start_wapi

__all__ = ["WAPI_VERSION", "WapiServer", "start_wapi"]
