"""Whether a VM is registered, under which names, with which reverse zones: one decision.

Every register step, the audit record and ``novahooks explain`` call
:func:`decide`, so what an operator is shown is what the workers do. It is a
pure function of the event and the settings (``[register]``, ``[naming]`` and
its rule sections, ``[dns] zone``): no backend, no ledger, no clock. A
template that gives an invalid name raises here, naming the rule, before any
backend is touched.
"""

import ipaddress
import string
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from novahooks.event import EventFormatError, InstanceEvent, event_from_dict
from novahooks.settings import Settings
from tasks import validate
from tasks.errors import InvalidEvent, Misconfigured, OutOfScope, StepError

#: The ledger entry that says policy left an instance out (see StepTask.deregister).
LEDGER_KEY = "policy"
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


class Decision(NamedTuple):
    register: bool
    #: The rule that decided ``register``, e.g. ``metadata novahooks:register=false``.
    rule: str
    #: Host name and DNS name; None when left out (and fqdn also before addresses are known).
    hostname: Optional[str] = None
    fqdn: Optional[str] = None
    #: Where each name came from, e.g. ``[naming project <id>] fqdn``.
    hostname_rule: Optional[str] = None
    fqdn_rule: Optional[str] = None
    #: address -> reverse zone chosen by a ``[naming prefix]`` rule (others: [dns] reverse_zones).
    reverse_zones: Dict[str, str] = {}

    def to_dict(self) -> Dict[str, Any]:
        data = dict(self._asdict())
        data["reverse_zones"] = dict(self.reverse_zones)
        return data


class Skipped(Exception):
    """Policy leaves this VM out: the step does nothing and the chain goes on to the audit."""

    def __init__(self, decision: Decision) -> None:
        super().__init__("not registered: %s" % decision.rule)
        self.decision = decision


def _flag(value: str, field: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    raise InvalidEvent(field, "%s is not true or false" % validate.quote(value))


def registration(event: InstanceEvent, settings: Settings) -> Tuple[bool, str]:
    """Opt-in/opt-out; the first rule that speaks wins (order in [register]'s docstring)."""
    policy = settings.register
    project = event.project_id
    if project and project in policy.projects_deny:
        return False, "[register] projects_deny: project %s" % project
    for source, values, key, field in (
            ("metadata", event.metadata, policy.metadata_key, "metadata"),
            ("image property", event.image_properties, policy.image_property,
             "image_properties")):
        if key and key in values:
            chosen = _flag(values[key], "%s.%s" % (field, key))
            return chosen, "%s %s=%s" % (source, key, values[key])
    if project and project in policy.projects_allow:
        return True, "[register] projects_allow: project %s" % project
    return policy.default, "[register] default = %s" % str(policy.default).lower()


def _networks(event: InstanceEvent) -> List[str]:
    """The VM's networks in NIC order (Nova's order: the first is the primary NIC)."""
    seen = []  # type: List[str]
    for address in event.addresses or []:
        if address.network and address.network not in seen:
            seen.append(address.network)
    return seen


#: placeholder -> the event field it reads, for error messages.
_FIELDS = {"hostname": "hostname", "display_name": "display_name", "uuid": "uuid",
           "short_uuid": "uuid", "project": "project_id", "network": "addresses[].network",
           "az": "availability_zone"}


def _render(template: str, where: str, values: Dict[str, Optional[str]],
            networks_known: bool = True) -> Optional[str]:
    """The template filled in; None when it needs {network} and networks are not known yet."""
    out = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        value = values.get(name)
        if not value:
            if name == "network" and not networks_known:
                return None
            raise InvalidEvent(_FIELDS.get(name, name), "missing, and %s = %s needs {%s}"
                               % (where, template, name))
        out.append(value)
    return "".join(out)


def _hostname(event: InstanceEvent, settings: Settings,
              values: Dict[str, Optional[str]]) -> Tuple[str, str]:
    project = settings.naming.rules.get(("project", event.project_id or ""))
    template, where = settings.naming.hostname, "[naming] hostname"
    if project is not None and getattr(project, "hostname", None):
        template, where = project.hostname, "[naming project %s] hostname" % event.project_id
    if template == "{hostname}":
        return validate.hostname(event.hostname), where  # Nova's name, errors as ever
    text = _render(template, where, values) or ""
    try:
        return validate.hostname(text), where
    except InvalidEvent as exc:
        raise InvalidEvent("hostname", "%s = %s gives %s: %s" % (
            where, template, validate.quote(text), str(exc).split(": ", 1)[-1])) from None


def _fqdn_template(event: InstanceEvent, settings: Settings) -> Tuple[str, str, Optional[str]]:
    """(template, where, the network a network rule matched)."""
    naming = settings.naming
    for network in _networks(event):
        rule = naming.rules.get(("network", network))
        if rule is not None and getattr(rule, "fqdn", None):
            return rule.fqdn, "[naming network %s] fqdn" % network, network
    project = naming.rules.get(("project", event.project_id or ""))
    if project is not None and getattr(project, "fqdn", None):
        return project.fqdn, "[naming project %s] fqdn" % event.project_id, None
    if naming.fqdn:
        return naming.fqdn, "[naming] fqdn", None
    zone = settings.dns.zone
    if not zone:
        raise Misconfigured("neither [naming] fqdn nor [dns] zone is set; cannot name %s"
                            % event.uuid)
    return "{hostname}." + zone.rstrip("."), "[dns] zone", None


def _fqdn(event: InstanceEvent, settings: Settings, hostname: str,
          values: Dict[str, Optional[str]]) -> Tuple[Optional[str], str]:
    template, where, network = _fqdn_template(event, settings)
    values = dict(values, hostname=hostname, network=network or values.get("network"))
    text = _render(template, where, values, networks_known=event.addresses is not None)
    if text is None:
        return None, where
    name = text.rstrip(".").lower()
    problem = validate.dns_name_problem(name)
    if problem:
        raise InvalidEvent("hostname" if where == "[dns] zone" else "fqdn",
                           "%s = %s gives %s: %s" % (where, template, validate.quote(name),
                                                     problem))
    zone = (settings.dns.zone or "").rstrip(".").lower()
    if zone and name != zone and not name.endswith("." + zone):
        raise OutOfScope("%s = %s gives %s, outside [dns] zone %s" % (where, template, name,
                                                                      zone))
    return name, where


def reverse_zone(address: str, prefixes: Sequence[Tuple[Any, str]]) -> Optional[str]:
    """The zone of the most specific ``[naming prefix]`` holding ``address``, if any.

    ``prefixes`` is NamingSettings.reverse_prefixes(): most specific first. None for an
    IPv4-mapped IPv6 address even inside a wide IPv6 prefix: its PTR name is the IPv4 one
    under in-addr.arpa, which no ip6.arpa zone holds (tasks/validate.py refuses them).
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return None
    for network, zone in prefixes:
        if ip.version == network.version and ip in network:
            return zone
    return None


def name(event: InstanceEvent, settings: Settings) -> Decision:
    """The names policy gives ``event`` whether or not it is registered (removals, reconcile)."""
    networks = _networks(event)
    values = {"hostname": event.hostname, "display_name": event.display_name,
              "uuid": event.uuid, "short_uuid": event.uuid.split("-")[0],
              "project": event.project_id, "az": event.availability_zone,
              "network": networks[0] if networks else None}
    hostname, hostname_rule = _hostname(event, settings, values)
    fqdn, fqdn_rule = _fqdn(event, settings, hostname, values)
    prefixes = settings.naming.reverse_prefixes()
    zones = {}  # type: Dict[str, str]
    for address in event.addresses or []:
        zone = reverse_zone(address.address, prefixes)
        if zone is not None:
            zones[address.address] = zone
    return Decision(True, "names only", hostname, fqdn, hostname_rule, fqdn_rule, zones)


def decide(event: InstanceEvent, settings: Settings) -> Decision:
    """Register or not, and the names, for a validated event; InvalidEvent names the rule.

    A VM left out is not named at all: a bad name must not fail a VM nobody registers.
    """
    register, rule = registration(event, settings)
    if not register:
        return Decision(False, rule)
    return name(event, settings)._replace(rule=rule)


def explain(payload: Any, settings: Settings) -> Dict[str, Any]:
    """The decision for a raw event dict as JSON, or the error that stops it (explain, audit)."""
    try:
        event = validate.event(event_from_dict(payload), needs_hostname=False)
        return decide(event, settings).to_dict()
    except EventFormatError as exc:
        return {"error": str(exc)}
    except StepError as exc:
        return {"error": "%s: %s" % (type(exc).__name__, exc)}
