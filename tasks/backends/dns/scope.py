"""Where a DNS driver may write, checked before its first write.

A name must lie in ``[dns] zone``. An address's PTR goes to the reverse zone a
``[naming prefix]`` rule names for it, else to the most specific of ``[dns]
reverse_zones`` that holds it; an address no zone holds is out of scope, so a
chain stops before it leaves a name whose reverse lookup fails.
"""

from typing import Any, Sequence, Tuple

import dns.name
import dns.reversename

from tasks.errors import Misconfigured, OutOfScope
from tasks.policy import reverse_zone


class Scope(object):
    def __init__(self, settings: Any, backend: str) -> None:
        if not settings.zone:
            raise Misconfigured("[dns] zone is not set", backend=backend)
        self.backend = backend
        self.zone = dns.name.from_text(settings.zone)
        self.reverse_zones = sorted((dns.name.from_text(z) for z in settings.reverse_zones),
                                    key=lambda n: -len(n.labels))

    def name(self, fqdn: str) -> dns.name.Name:
        name = dns.name.from_text(fqdn)
        if not name.is_subdomain(self.zone):
            raise OutOfScope("%s is outside the configured zone %s" % (fqdn, self.zone),
                             backend=self.backend)
        return name

    def reverse_zone(self, address: str, prefixes: Sequence[Tuple[Any, str]]) -> dns.name.Name:
        chosen = reverse_zone(address, prefixes)
        if chosen is not None:
            return dns.name.from_text(chosen)
        reverse = dns.reversename.from_address(address)
        for zone in self.reverse_zones:
            if reverse.is_subdomain(zone):
                return zone
        raise OutOfScope("address %s is outside every configured reverse zone (%s)"
                         % (address, ", ".join(z.to_text() for z in self.reverse_zones) or "none"),
                         backend=self.backend)
