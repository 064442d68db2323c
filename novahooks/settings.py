"""One typed settings object, read from an INI file and the environment.

INI because the same file is read inside Nova (Python 3.6+, standard library
only, where neither TOML nor pydantic is available) and by the workers.
Precedence: defaults < file < environment (``NOVAHOOKS_<SECTION>_<KEY>``).
Secrets (``token``, ``password``, ``tsig_secret``) may also come from a file
named by ``<key>_file``; they are held in :class:`Secret`, whose repr never
shows the value, so a logged settings object leaks nothing.
"""

import configparser
import ipaddress
import os
import re
import string
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, cast
from urllib.parse import quote

DEFAULT_PATH = "/etc/novahooks/novahooks.conf"
SECRET_KEYS = ("token", "password", "tsig_secret", "signing_key", "previous_signing_key")


class SettingsError(ValueError):
    """Configuration is wrong; the message names the section and key."""


class Secret(object):
    """A credential that refuses to be printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


def _kind(owner: str, key: str, annotation: Any) -> Any:
    """How a key's text is read, from its annotation (see :func:`_coerce`)."""
    for kind in (str, int, float, bool, Secret):
        if annotation is kind:
            return kind
    if annotation == List[str]:
        return list
    if annotation == Optional[str]:
        return None
    raise TypeError("%s.%s: settings keys are str, int, float, bool, List[str], Secret or "
                    "Optional[str], not %r" % (owner, key, annotation))


class Section(object):
    """A group of typed settings; subclasses declare fields as class attributes.

    ``FIELDS`` maps key -> (type, default); types are str, int, float, bool,
    list (comma-separated strings), Secret, or None for "optional string".
    """

    NAME = ""
    #: key -> (kind, default), built from the annotated class attributes of each subclass
    #: (``key: type = default``: one declaration per key) by ``__init_subclass__``.
    FIELDS = {}  # type: Dict[str, Tuple[Any, Any]]
    #: Named sub-sections ``[<NAME> <kind> <value>]`` (file only): kind -> their Section class.
    SUBSECTIONS = {}  # type: Dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "FIELDS" in cls.__dict__:
            return
        # Inherited keys first (a shared base declares them once), then the class's own.
        fields = dict(getattr(super(cls, cls), "FIELDS", {}))  # type: Dict[str, Tuple[Any, Any]]
        for key, annotation in cls.__dict__.get("__annotations__", {}).items():
            fields[key] = (_kind(cls.__name__, key, annotation), getattr(cls, key, None))
        cls.FIELDS = fields

    def __init__(self, values: Mapping[str, Any],
                 rules: Optional[Mapping[Tuple[str, str], "Section"]] = None) -> None:
        for key, (_, default) in self.FIELDS.items():
            setattr(self, key, values.get(key, default))
        #: The keys the file or the environment set (``novahooks check`` probes what is
        #: configured, not what merely has a default).
        self.given = frozenset(values)
        #: (kind, value) -> that sub-section, in file order.
        self.rules = dict(rules or {})  # type: Dict[Tuple[str, str], Any]

    def as_dict(self) -> Dict[str, Any]:
        return {key: getattr(self, key) for key in self.FIELDS}

    def problems(self) -> List[str]:
        """What is wrong with these values beyond their types; each line names its key."""
        return []

    def _one_of(self, key: str, choices: Sequence[str]) -> List[str]:
        """The problem line of a key whose value is none of ``choices`` (empty when it is)."""
        value = getattr(self, key)
        if value in choices:
            return []
        return ["[%s] %s: %r is not %s or %s"
                % (self.NAME, key, value, ", ".join(choices[:-1]), choices[-1])]

    def _all_in(self, key: str, allowed: Sequence[str], why: str = "") -> List[str]:
        """The problem line of a list key holding values outside ``allowed``, naming them."""
        unknown = [value for value in getattr(self, key) if value not in allowed]
        if not unknown:
            return []
        return ["[%s] %s: %s%s (choose from %s)"
                % (self.NAME, key, ", ".join(unknown), why, ", ".join(allowed))]

    def __repr__(self) -> str:
        return "%s(%r)" % (type(self).__name__, self.as_dict())


class OutboxSettings(Section):
    NAME = "outbox"
    path: str = "/var/lib/novahooks/outbox.sqlite"
    busy_timeout_ms: int = 2000


class BrokerSettings(Section):
    NAME = "broker"
    url: str = "redis://127.0.0.1:6379/0"
    # Redis: a message taken by a worker that died comes back after this long. Keep
    # it above the longest task plus [retry] backoff_max (a retry waits on its worker).
    visibility_timeout: int = 1800
    connect_timeout: float = 5.0
    # The broker's password (Redis requirepass / ACL, RabbitMQ user), put into url's
    # user part when the workers, relay and CLI connect; keep it out of url itself.
    password: Secret = Secret("")
    # HMAC-SHA256 key every task message is signed with (tasks/signing.py): relays,
    # workers and the CLI share it, Nova's hooks never read it. At least 32 characters.
    signing_key: Secret = Secret("")
    # During a key rotation only: the key being replaced, still accepted (never used to
    # sign) so that messages queued before every process had the new key are not refused.
    previous_signing_key: Secret = Secret("")
    # A task message (body) larger than this is refused unread by the workers.
    max_message_bytes: int = 1048576

    def problems(self) -> List[str]:
        found = []
        if self.signing_key and len(self.signing_key.reveal()) < 32:
            found.append("[broker] signing_key: shorter than 32 characters")
        if self.previous_signing_key and len(self.previous_signing_key.reveal()) < 32:
            found.append("[broker] previous_signing_key: shorter than 32 characters")
        userinfo = self.url.split("://", 1)[-1].split("@")[0] if "@" in self.url else ""
        if self.password and ":" in userinfo:
            found.append("[broker] url carries a password and password is set too: keep it "
                         "in password_file only")
        if self.max_message_bytes < 4096:
            found.append("[broker] max_message_bytes: %r is below 4096"
                         % self.max_message_bytes)
        return found

    def connection_url(self) -> str:
        """``url`` with ``password`` in its user part, for clients; never log it."""
        if not self.password or "://" not in self.url:
            return self.url
        scheme, rest = self.url.split("://", 1)
        user, _, host = rest.rpartition("@")
        return "%s://%s:%s@%s" % (scheme, user, quote(self.password.reveal(), safe=""), host)


class RelaySettings(Section):
    NAME = "relay"
    poll_interval: float = 0.2
    batch: int = 200


class RetrySettings(Section):
    NAME = "retry"
    max_retries: int = 8
    backoff_max: int = 600
    # A message whose worker died this often while it held it is delivered again
    # alone, in a process of its own, poison_cooldown seconds later; only if it kills
    # that process too is it parked as a dead letter (tasks/middleware.py Deliveries).
    # A RabbitMQ step queue's x-delivery-limit is max_deliveries + 2 (celeryconfig.py).
    max_deliveries: int = 3
    poison_cooldown: float = 30.0


class BatchingSettings(Section):
    """What a backend that merges several VMs' writes reads (tasks/backends/coalesce.py)."""

    # NetBox and Infoblox: writes of steps a worker runs at once (-P threads -c N) that
    # wait behind one to the same endpoint go out as one list request (Infoblox: one WAPI
    # request object) for at most batch_size steps; a write waits at most batch_wait ms.
    # 1: every write alone. README "Batching NetBox writes".
    batch_size: int = 50
    batch_wait: int = 200

    def problems(self) -> List[str]:
        found = []
        if self.batch_size < 1:
            found.append("[%s] batch_size: %r is below 1" % (self.NAME, self.batch_size))
        if self.batch_wait < 0:
            found.append("[%s] batch_wait: %r is below 0" % (self.NAME, self.batch_wait))
        return found


class HttpBackendSettings(BatchingSettings):
    """What IPAM and inventory share: a backend behind an HTTP API (NetBox by default)."""

    driver: str = "netbox"
    url: Optional[str] = None
    token: Secret = Secret("")
    verify_tls: bool = True
    timeout: float = 10.0


class IpamSettings(HttpBackendSettings):
    NAME = "ipam"
    # driver = infoblox: url is the WAPI base (https://gm.example.com/wapi/v2.12),
    # basic auth with username and password (or password_file).
    username: Optional[str] = None
    password: Secret = Secret("")
    network_view: str = "default"
    # NetBox: seconds between refreshes of each worker process's copy of the addresses its
    # prefixes hold, which answers dns.register's "held by another?" without a NetBox read
    # in a burst; an address recorded by someone else since the last refresh is refused
    # only by ipam.reserve, after DNS wrote. 0: read every time. README "Batching NetBox
    # writes".
    preflight_watch: float = 0.0

    def problems(self) -> List[str]:
        found = super().problems()
        if self.preflight_watch < 0:
            found.append("[ipam] preflight_watch: %r is below 0" % self.preflight_watch)
        return found


class InventorySettings(HttpBackendSettings):
    NAME = "inventory"
    cluster_type: str = "OpenStack Nova"
    cluster: str = "nova"
    # delete: remove the VM's record; decommission: keep it, marked (every driver).
    on_delete: str = "delete"
    # driver = rest: a CMDB's REST API. Paths are relative to url; {uuid} and {id}
    # are filled in (URL-quoted). field_map: cmdb_field=event_field pairs.
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    find_url: str = "/api/cis?uuid={uuid}"
    list_url: str = "/api/cis"
    create_url: str = "/api/cis"
    update_url: str = "/api/cis/{id}"
    delete_url: str = "/api/cis/{id}"
    update_method: str = "PUT"
    id_field: str = "id"
    results_key: str = ""
    # where a list answer names its next page (dotted); a Link: rel="next" header
    # is followed too
    next_key: str = "next"
    field_map: List[str] = ["uuid=uuid", "name=hostname", "status=status",
                            "project=project_id", "vcpus=flavor.vcpus",
                            "memory_mb=flavor.memory_mb", "addresses=addresses"]

    def problems(self) -> List[str]:
        return super().problems() + self._one_of("on_delete", ("delete", "decommission"))


class DnsSettings(BatchingSettings):
    NAME = "dns"
    driver: str = "rfc2136"
    server: str = "127.0.0.1"
    port: int = 53
    zone: Optional[str] = None
    reverse_zones: List[str] = []
    tsig_key_name: Optional[str] = None
    tsig_secret: Secret = Secret("")
    tsig_algorithm: str = "hmac-sha256"
    ttl: int = 300
    timeout: float = 5.0
    # Without a TSIG key, updates are refused unless this is true: only for a server
    # that restricts updates by address (AD DNS without GSS-TSIG, "nonsecure" zones).
    allow_unsigned: bool = False
    # driver = infoblox: WAPI base url, basic auth, the DNS view records go in.
    url: Optional[str] = None
    username: Optional[str] = None
    password: Secret = Secret("")
    verify_tls: bool = True
    view: str = "default"
    # First labels no VM's DNS name may have (any zone): names clients trust by
    # convention (WPAD/ISATAP discovery, localhost). The zone's own NS and MX targets
    # are refused too, as the server names them.
    reserved_names: List[str] = ["wpad", "localhost", "isatap"]


class DirectorySettings(Section):
    NAME = "directory"
    driver: str = "ldap"
    url: Optional[str] = None
    bind_dn: Optional[str] = None
    password: Secret = Secret("")
    base_dn: Optional[str] = None
    starttls: bool = True
    ca_file: Optional[str] = None
    verify_tls: bool = True
    timeout: float = 10.0
    # The name the server's certificate carries, when url names an address.
    tls_server_name: Optional[str] = None
    # driver = ad: computer objects go to ou (default: base_dn) as <hostname>.<dns_domain>;
    # uac 4098 = workstation trust account, disabled until the domain join sets its
    # password. linux = host (a device entry as the ldap driver makes, under base_dn),
    # computer (a computer object too, for realmd/sssd joins) or skip.
    ou: Optional[str] = None
    dns_domain: Optional[str] = None
    uac: int = 4098
    linux: str = "host"
    # Names no VM may take (case-insensitive); AD also refuses the domain's NetBIOS name
    # and any name an object already holds as sAMAccountName, with or without "$".
    reserved_names: List[str] = ["krbtgt", "administrator", "guest"]


class AuditSettings(Section):
    NAME = "audit"
    drivers: List[str] = ["jsonl"]
    path: str = "/var/lib/novahooks/audit.jsonl"
    syslog_host: Optional[str] = None
    syslog_port: int = 514
    app_name: str = "novahooks"
    # The Merkle log's checkpoints (tasks/audit_signer.py). The log's public key,
    # name+id+base64 as `novahooks audit keygen` prints it; its name is the log's origin.
    verifier_key: Optional[str] = None
    # The private key: read by `novahooks audit signer` alone, which runs as a user of its
    # own; the file must be readable by that user only (mode 0600 or 0400).
    signer_key_path: Optional[str] = None
    signer_socket: str = "/run/novahooks-audit/signer.sock"
    # A checkpoint once this many records were appended since the last one, or once
    # checkpoint_interval seconds passed and at least one was.
    checkpoint_every: int = 1000
    checkpoint_interval: float = 60.0
    # The latest checkpoint, written by the signer (default: <path>.checkpoint).
    checkpoint_path: Optional[str] = None
    # Anchors outside the writer: a directory meant to be WORM or another host's mount (one
    # file per checkpoint, never overwritten), checkpoints to syslog_host, a witness.
    anchor_dir: Optional[str] = None
    anchor_syslog: bool = False
    witness_url: Optional[str] = None
    # The witness's cosignature key (name+id+base64, type 0x04), to check its answers.
    witness_key: Optional[str] = None
    # The signer re-reads the whole log this often and stops signing if it was changed.
    verify_every: float = 3600.0
    # strict: at least one anchor must be configured, and check fails while none holds
    # the latest checkpoint.
    strict: bool = False
    # The signer's Prometheus endpoint (0 = none).
    metrics_port: int = 0
    # `novahooks audit witness`: its private key (type 0x04), state file and address.
    witness_key_path: Optional[str] = None
    witness_state: str = "/var/lib/novahooks-witness/state.json"
    witness_listen: str = "127.0.0.1:8470"

    def latest_checkpoint(self) -> str:
        return self.checkpoint_path or self.path + ".checkpoint"

    def anchors(self) -> List[str]:
        """The anchors outside the writer that are configured."""
        return [name for name, on in (("worm", self.anchor_dir),
                                      ("syslog", self.anchor_syslog and self.syslog_host),
                                      ("witness", self.witness_url)) if on]

    def problems(self) -> List[str]:
        found = []
        if self.checkpoint_every < 1:
            found.append("[audit] checkpoint_every: %d is not a positive number of records"
                         % self.checkpoint_every)
        if self.checkpoint_interval <= 0:
            found.append("[audit] checkpoint_interval: must be more than 0 seconds")
        if self.strict and not self.anchors():
            found.append("[audit] strict: no anchor outside the writer is configured "
                         "(anchor_dir, anchor_syslog with syslog_host, or witness_url)")
        if self.anchor_syslog and not self.syslog_host:
            found.append("[audit] anchor_syslog: syslog_host is not set")
        if self.witness_url and not self.witness_key:
            found.append("[audit] witness_url: witness_key is needed to check its cosignature")
        return found


class LedgerSettings(Section):
    NAME = "ledger"
    # SQLite on one worker host; postgresql://... when workers run on several hosts.
    url: str = "sqlite:////var/lib/novahooks/ledger.sqlite"
    # keep: a failed create leaves earlier steps' records (the dead letter says what is
    # missing); undo: remove what the earlier steps made.
    on_permanent_failure: str = "keep"
    stalled_after: int = 900
    # SQLite only. normal: a commit survives any crash of a worker process but may be
    # rolled back by a power loss or kernel crash (a redelivered step then redoes its
    # idempotent work); full: fsync on every commit, several ms per step.
    sqlite_synchronous: str = "normal"

    def problems(self) -> List[str]:
        return (self._one_of("on_permanent_failure", ("keep", "undo"))
                + self._one_of("sqlite_synchronous", ("normal", "full")))


class MetricsSettings(Section):
    NAME = "metrics"
    # 0 = no metrics endpoint. Each worker pool (one per queue) on a host needs its
    # own port: set NOVAHOOKS_METRICS_WORKER_PORT per worker service.
    worker_port: int = 0
    relay_port: int = 0
    address: str = "127.0.0.1"
    # prometheus-client's multiprocess files for Celery's prefork children.
    multiproc_dir: str = "/tmp/novahooks-metrics"


#: Steps a pre-boot gate may wait for: those of the pre-boot ("create") chain, which need
#: no address (Nova has allocated none when build_instance's pre-hook runs).
GATE_STEPS = ("ldap.register", "inventory.register")
#: Longest gate wait accepted: the build holds one of nova-compute's build slots
#: ([DEFAULT] max_concurrent_builds) and the instance lock while it waits.
GATE_MAX_TIMEOUT = 600.0


class GateSettings(Section):
    """Pre-boot gate, read by the build_instance hook and served by the relay."""

    NAME = "gate"
    # Steps that must have finished before Nova boots the VM; empty: no gate, no wait.
    steps: List[str] = []
    timeout: float = 30.0
    # continue: log, audit and let the build go on; abort: undo and stop the build.
    on_failure: str = "continue"
    poll_interval: float = 0.2
    # The relay's gate endpoint, a Unix socket; empty: gate.sock beside [outbox] path.
    socket: str = ""

    def problems(self) -> List[str]:
        found = self._all_in("steps", GATE_STEPS, " cannot gate a boot")
        if not 0 < self.timeout <= GATE_MAX_TIMEOUT:
            found.append("[gate] timeout: %r must be above 0 and at most %d seconds"
                         % (self.timeout, GATE_MAX_TIMEOUT))
        found += self._one_of("on_failure", ("continue", "abort"))
        if not 0 < self.poll_interval <= 5:
            found.append("[gate] poll_interval: %r must be above 0 and at most 5 seconds"
                         % self.poll_interval)
        if self.socket and not os.path.isabs(self.socket):
            found.append("[gate] socket: %r is not an absolute path" % self.socket)
        return found


class NotificationsSettings(Section):
    """``novahooks listen``: Nova's (and Neutron's) notifications through oslo.messaging."""

    NAME = "notifications"
    # oslo.messaging transport URL without the password: rabbit://user@host:5672/vhost
    transport_url: str = "rabbit://guest@127.0.0.1:5672/"
    password: Secret = Secret("")
    nova_exchange: str = "nova"
    # versioned_notifications (Nova's [notifications] versioned_notifications_topics)
    # and notifications (legacy compute.instance.*, [oslo_messaging_notifications] topics).
    nova_topics: List[str] = ["versioned_notifications", "notifications"]
    neutron_exchange: str = "neutron"
    neutron_topics: List[str] = ["notifications"]
    # The listener's own queue, bound to every topic: other consumers (Ceilometer)
    # keep getting their copy. Empty: consume the shared <topic>.<priority> queues.
    pool: str = "novahooks"
    # Must match the deployment's [oslo_messaging_rabbit] amqp_durable_queues, or
    # RabbitMQ refuses to redeclare the exchanges.
    durable_queues: bool = False

    def problems(self) -> List[str]:
        found = []
        scheme = self.transport_url.split("://", 1)[0] if "://" in self.transport_url else ""
        if scheme not in ("rabbit", "amqp", "kafka"):
            found.append("[notifications] transport_url: %r is not an oslo.messaging URL "
                         "(rabbit://user@host:5672/vhost)" % self.transport_url.split("@")[-1])
        elif "@" in self.transport_url and ":" in self.transport_url.split("://", 1)[1] \
                .split("@")[0] and self.password:
            found.append("[notifications] transport_url carries a password and password is "
                         "set too: keep it in password_file only")
        if not self.nova_topics and not self.neutron_topics:
            found.append("[notifications] nova_topics, neutron_topics: both empty, nothing "
                         "to listen to")
        return found


#: What a [naming] template may name; tasks/policy.py fills them in per VM.
NAMING_PLACEHOLDERS = ("hostname", "display_name", "uuid", "short_uuid", "project", "network",
                       "az")
# IPv6 addresses that stand for IPv4 ones (RFC 4291 2.5.5.2): their PTR lives in in-addr.arpa.
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.IGNORECASE | re.ASCII)


def _template_problems(where: str, template: str, one_label: bool) -> List[str]:
    """A template that can never give a valid name is refused at start, not per VM."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return ["%s: %r is not a template: %s" % (where, template, exc)]
    found = []
    sample = []
    for literal, name, spec, conversion in parts:
        sample.append(literal)
        if name is None:
            continue
        if name not in NAMING_PLACEHOLDERS or spec or conversion:
            found.append("%s: {%s%s%s} in %r is not a placeholder (choose from %s)"
                         % (where, name, "!" + conversion if conversion else "",
                            ":" + spec if spec else "", template,
                            ", ".join("{%s}" % p for p in NAMING_PLACEHOLDERS)))
        sample.append("x")
    if found:
        return found
    text = "".join(sample)
    if not one_label and text.endswith("."):
        text = text[:-1]  # an absolute name
    if one_label and "." in text:
        return ["%s: %r makes more than one DNS label; a host name is one label" % (where,
                                                                                      template)]
    if not all(_DNS_LABEL.fullmatch(label) for label in text.split(".")):
        return ["%s: %r can never give a valid DNS name (RFC 1123 labels: letters, digits and "
                "inner hyphens, 1-63 characters, no empty label)" % (where, template)]
    return []


def _reverse_zone_problem(where: str, network: Any, zone: str) -> Optional[str]:
    """None when ``zone`` holds the PTR name of every address in ``network``."""
    unit = 8 if network.version == 4 else 4
    pointer = network.network_address.reverse_pointer.split(".")
    labels = zone.split(".")
    inner = len(labels) - 2
    if inner < 1 or pointer[-len(labels):] != labels:
        return ("%s reverse_zone: %s is not a reverse zone of %s (for example %s; RFC 2317 "
                "classless zones are not supported: name the parent zone)"
                % (where, zone, network, ".".join(pointer[-(network.prefixlen // unit) - 2:])))
    if inner * unit > network.prefixlen:
        return ("%s reverse_zone: %s holds only part of %s (a /%d); name a zone of at most "
                "%d labels before %s" % (where, zone, network, network.prefixlen,
                                         network.prefixlen // unit, ".".join(labels[-2:])))
    return None


class ProjectNamingRule(Section):
    """``[naming project <project id>]``: names for one project's VMs."""

    NAME = "naming project"
    hostname: Optional[str] = None
    fqdn: Optional[str] = None


class NetworkNamingRule(Section):
    """``[naming network <network name>]``: the DNS name of VMs on that network.

    No host name here: it must be known before boot, when Nova has no networks yet.
    """

    NAME = "naming network"
    fqdn: Optional[str] = None


class PrefixNamingRule(Section):
    """``[naming prefix <cidr>]``: the reverse zone that takes its PTR records."""

    NAME = "naming prefix"
    reverse_zone: Optional[str] = None


class NamingSettings(Section):
    """How a VM is named; rules in ``[naming project|network|prefix <value>]`` sections.

    A project rule beats the defaults here; a network rule's fqdn beats both (the
    VM's first NIC with a rule). Templates are validated here and per VM by
    tasks/policy.py, which every register step and ``novahooks explain`` use.
    """

    NAME = "naming"
    # The host name every backend uses (directory cn / AD computer, inventory name).
    hostname: str = "{hostname}"
    # The DNS name; empty: {hostname}.<[dns] zone>.
    fqdn: str = ""

    SUBSECTIONS = {"project": ProjectNamingRule, "network": NetworkNamingRule,
                   "prefix": PrefixNamingRule}

    def problems(self) -> List[str]:
        found = _template_problems("[naming] hostname", self.hostname, one_label=True)
        if self.fqdn:
            found += _template_problems("[naming] fqdn", self.fqdn, one_label=False)
        seen = {}  # type: Dict[Any, str]
        for (kind, value), rule in self.rules.items():
            where = "[naming %s %s]" % (kind, value)
            for key in ("hostname", "fqdn"):
                template = getattr(rule, key, None)
                if template is not None:
                    found += _template_problems("%s %s" % (where, key), template,
                                                one_label=key == "hostname")
            if kind != "prefix":
                continue
            try:
                network = ipaddress.ip_network(value)
            except ValueError as exc:
                found.append("%s: %s" % (where, exc))
                continue
            if network.version == 6 and network.subnet_of(IPV4_MAPPED):
                found.append("%s: IPv4-mapped space (%s); events carrying such addresses are "
                             "refused, name the IPv4 prefix instead" % (where, IPV4_MAPPED))
                continue
            if network in seen:
                found.append("%s: the same prefix as [naming prefix %s]" % (where, seen[network]))
            seen[network] = value
            if rule.reverse_zone:
                problem = _reverse_zone_problem(where, network,
                                                rule.reverse_zone.strip().rstrip(".").lower())
                if problem:
                    found.append(problem)
        return found

    def reverse_prefixes(self) -> List[Tuple[Any, str]]:
        """(network, reverse zone) per prefix rule, most specific first.

        A rule without reverse_zone takes the zone its prefix ends on (the /16 of
        10.20.0.0/16 is 20.10.in-addr.arpa; a /22 is served from its /16's zone).
        """
        found = []
        for (kind, value), rule in self.rules.items():
            if kind != "prefix":
                continue
            network = ipaddress.ip_network(value)
            zone = (rule.reverse_zone or "").strip().rstrip(".").lower()
            if not zone:
                unit = 8 if network.version == 4 else 4
                labels = network.network_address.reverse_pointer.split(".")
                zone = ".".join(labels[-(network.prefixlen // unit) - 2:])
            found.append((network, zone))
        return sorted(found, key=lambda item: (-item[0].prefixlen, item[0].version))


class RegisterSettings(Section):
    """Which VMs are registered at all: opt-out (default true) or opt-in (false).

    Precedence, first that speaks wins: projects_deny, the instance's metadata_key,
    the image's image_property, projects_allow, default. A VM left out gets only
    its audit record, naming the rule.
    """

    NAME = "register"
    default: bool = True
    projects_allow: List[str] = []
    projects_deny: List[str] = []
    # true/false in the image's properties (Nova copies them to the instance) ...
    image_property: str = "novahooks_register"
    # ... and in the instance's metadata (openstack server create --property).
    metadata_key: str = "novahooks:register"

    def problems(self) -> List[str]:
        both = sorted(set(self.projects_allow) & set(self.projects_deny))
        if both:
            return ["[register] projects_allow, projects_deny: %s in both" % ", ".join(both)]
        return []


#: Pre-boot steps ``novahooks vendordata`` may run: those that need no address.
VENDORDATA_STEPS = ("directory", "inventory")
#: Nova's default [api] vendordata_dynamic_read_timeout: an answer later than this is lost.
NOVA_VENDORDATA_TIMEOUT = 5.0


class VendordataSettings(Section):
    """``novahooks vendordata``: the service Nova's DynamicJSON vendordata provider calls."""

    NAME = "vendordata"
    address: str = "127.0.0.1"
    port: int = 9443
    # TLS is required: the answer carries a join credential. Nova verifies the certificate
    # against [api] vendordata_dynamic_ssl_certfile.
    tls_cert_file: Optional[str] = None
    tls_key_file: Optional[str] = None
    # What Nova's [vendordata_dynamic_auth] (auth_type = http_basic) sends.
    username: str = "nova"
    password: Secret = Secret("")
    # Fernet keys (one per line, the first encrypts) for the credentials kept at rest in
    # the [ledger] database: novahooks vendordata --generate-key PATH makes one.
    secret_key_file: Optional[str] = None
    # Seconds a credential is handed out again; after that no new one is issued for the
    # instance (a joined machine has changed its password by then).
    credential_ttl: int = 86400
    # Seconds an answer may take, below Nova's 5 s read timeout: then the guest is
    # answered over_budget (retry) and the work goes on for its next read. The budget
    # starts when a request reaches the service; TLS and queueing before that took up
    # to 0.9 s in a 100-VM burst on a loaded machine (bench/RESULTS.md).
    budget: float = 3.0
    steps: List[str] = list(VENDORDATA_STEPS)
    # Windows VMs with [directory] driver = ad: odj (an offline domain-join blob from
    # Samba's net offlinejoin provision, for djoin /requestODJ) or password (a one-time
    # machine password for an unsecure join).
    windows_join: str = "odj"
    # Nova sends no os_type: the instance metadata key that names it (windows/linux),
    # or images known to be Windows.
    os_metadata_key: str = "os_type"
    windows_images: List[str] = []
    # net offlinejoin provision: the DC to ask (default: found by DNS) and the net command.
    odj_dc: Optional[str] = None
    net_command: str = "net"
    # The smb.conf net reads (its lock and cache directories, name resolution); default:
    # Samba's own (/etc/samba/smb.conf).
    odj_smb_conf: Optional[str] = None
    # Threads doing the work (the HTTP side has 8 per work thread: they mostly wait).
    threads: int = 16
    # Give a computer object a worker's chain made its credential before the guest asks
    # (one thread; a DC sets passwords one at a time): a mass boot's reads then only
    # read it back.
    issue_ahead: bool = True
    # For novahooks check: the URL Nova calls (default https://address:port/) and the CA
    # file that verifies it (Nova's vendordata_dynamic_ssl_certfile).
    url: Optional[str] = None
    ca_file: Optional[str] = None

    def problems(self) -> List[str]:
        found = self._all_in("steps", VENDORDATA_STEPS)
        if not 0 < self.budget < NOVA_VENDORDATA_TIMEOUT:
            found.append("[vendordata] budget: %r must be above 0 and below Nova's %g s "
                         "read timeout" % (self.budget, NOVA_VENDORDATA_TIMEOUT))
        found += self._one_of("windows_join", ("odj", "password"))
        if self.credential_ttl <= 0:
            found.append("[vendordata] credential_ttl: %r must be above 0"
                         % self.credential_ttl)
        if not 0 < self.port < 65536:
            found.append("[vendordata] port: %r is not a TCP port" % self.port)
        if self.threads < 1:
            found.append("[vendordata] threads: %r must be at least 1" % self.threads)
        return found


class LimitsSettings(Section):
    """What one event may carry; a bigger one is refused, naming the limit, before any
    backend is touched (every step validates it)."""

    NAME = "limits"
    # The event as JSON, metadata and image properties included.
    max_event_bytes: int = 65536
    # Fixed and floating addresses of one VM.
    max_addresses: int = 32
    # Instance metadata and image properties together, keys and values.
    max_metadata_bytes: int = 16384

    def problems(self) -> List[str]:
        return ["[limits] %s: %r must be at least 1" % (key, getattr(self, key))
                for key in ("max_event_bytes", "max_addresses", "max_metadata_bytes")
                if getattr(self, key) < 1]


class ReconcileSettings(Section):
    """``novahooks reconcile --nova``: how sure it must be before removing records."""

    NAME = "reconcile"
    # Seconds an instance must have been absent from Nova, across reconcile passes, before
    # --fix removes its records (each pass notes when it first saw it missing; Nova is
    # asked by id again right before a removal). 0: on the first pass that finds it.
    prune_after: int = 3600

    def problems(self) -> List[str]:
        if self.prune_after < 0:
            return ["[reconcile] prune_after: %r must be 0 or more" % self.prune_after]
        return []


SECTIONS = (OutboxSettings, LedgerSettings, MetricsSettings, BrokerSettings, RelaySettings,
            RetrySettings, IpamSettings, InventorySettings, DnsSettings, DirectorySettings,
            AuditSettings, GateSettings, NotificationsSettings,
            NamingSettings, RegisterSettings, VendordataSettings, ReconcileSettings,
            LimitsSettings)


class Settings(object):
    """All sections; each driver is handed only its own."""

    def __init__(self, sections: Mapping[str, Section], source: Optional[str]) -> None:
        self.source = source
        self.outbox = cast(OutboxSettings, sections["outbox"])
        self.ledger = cast(LedgerSettings, sections["ledger"])
        self.metrics = cast(MetricsSettings, sections["metrics"])
        self.broker = cast(BrokerSettings, sections["broker"])
        self.relay = cast(RelaySettings, sections["relay"])
        self.retry = cast(RetrySettings, sections["retry"])
        self.ipam = cast(IpamSettings, sections["ipam"])
        self.inventory = cast(InventorySettings, sections["inventory"])
        self.dns = cast(DnsSettings, sections["dns"])
        self.directory = cast(DirectorySettings, sections["directory"])
        self.audit = cast(AuditSettings, sections["audit"])
        self.gate = cast(GateSettings, sections["gate"])
        self.notifications = cast(NotificationsSettings, sections["notifications"])
        self.naming = cast(NamingSettings, sections["naming"])
        self.register = cast(RegisterSettings, sections["register"])
        self.vendordata = cast(VendordataSettings, sections["vendordata"])
        self.reconcile = cast(ReconcileSettings, sections["reconcile"])
        self.limits = cast(LimitsSettings, sections["limits"])


def _coerce(section: str, key: str, kind: Any, raw: str) -> Any:
    where = "[%s] %s" % (section, key)
    if kind is None or kind is str:
        return raw
    if kind is Secret:
        return Secret(raw)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError("%s: %r is not a boolean (true/false)" % (where, raw))
    if kind is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError("%s: %r is not a valid %s" % (where, raw, kind.__name__)) from None


def _read_secret_file(section: str, key: str, path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError as exc:
        raise SettingsError("[%s] %s_file: cannot read %s: %s"
                            % (section, key, path, exc.strerror)) from None


def _subsections(parser: configparser.ConfigParser, cls: Any,
                 problems: List[str]) -> Dict[Tuple[str, str], Section]:
    """``[<NAME> <kind> <value>]`` sections of ``cls``, typed like any section."""
    found = {}  # type: Dict[Tuple[str, str], Section]
    for name in parser.sections():
        parts = name.split(None, 2)
        if len(parts) != 3 or parts[0] != cls.NAME or parts[1] not in cls.SUBSECTIONS:
            continue
        kind = cls.SUBSECTIONS[parts[1]]
        values = {}  # type: Dict[str, Any]
        for key, raw in parser.items(name):
            if key not in kind.FIELDS:
                problems.append("[%s] %s: unknown key (choose from %s)"
                                % (name, key, ", ".join(kind.FIELDS)))
                continue
            try:
                values[key] = _coerce(name, key, kind.FIELDS[key][0], raw)
            except SettingsError as exc:
                problems.append(str(exc))
        if (parts[1], parts[2]) in found:
            problems.append("[%s]: given twice" % name)
        found[(parts[1], parts[2])] = kind(values)
    return found


def load_settings(path: Optional[str] = None,
                  environ: Optional[Mapping[str, str]] = None,
                  only: Optional[Sequence[str]] = None) -> Settings:
    """Read the file (if any) and the environment; fail naming every wrong key.

    ``only`` names the sections to read (the hook side: ``outbox`` and ``gate``); every
    other section keeps its defaults, and neither its keys nor its secret files are read.
    """
    env = os.environ if environ is None else environ
    path = path or env.get("NOVAHOOKS_CONFIG") or (
        DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None)
    # "key = value ; why" is how operators annotate INI files: strip such comments.
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    if path:
        try:
            with open(path) as handle:
                parser.read_file(handle)
        except OSError as exc:
            raise SettingsError("cannot read configuration file %s: %s"
                                % (path, exc.strerror)) from None
        except configparser.Error as exc:
            raise SettingsError("configuration file %s: %s" % (path, exc)) from None
    by_name = {cls.NAME: cls for cls in SECTIONS}
    problems = []  # type: List[str]
    for name in parser.sections():
        parts = name.split(None, 2)
        if only is not None:
            continue
        if name not in by_name and not (len(parts) == 3 and parts[0] in by_name
                                        and parts[1] in by_name[parts[0]].SUBSECTIONS):
            problems.append("unknown section [%s]" % name)
    sections = {}
    for cls in SECTIONS:
        values = {}  # type: Dict[str, Any]
        if only is not None and cls.NAME not in only:
            sections[cls.NAME] = cls(values)
            continue
        raw = dict(parser.items(cls.NAME)) if parser.has_section(cls.NAME) else {}
        for key in raw:
            base = key[:-5] if key.endswith("_file") and key[:-5] in SECRET_KEYS else key
            if base not in cls.FIELDS:
                problems.append("[%s] %s: unknown key" % (cls.NAME, key))
        prefix = "NOVAHOOKS_%s_" % cls.NAME.upper()
        for key, (kind, _) in cls.FIELDS.items():
            env_value = env.get(prefix + key.upper())
            env_file = env.get(prefix + key.upper() + "_FILE")
            try:
                if env_value is not None:
                    values[key] = _coerce(cls.NAME, key, kind, env_value)
                elif env_file is not None and key in SECRET_KEYS:
                    values[key] = Secret(_read_secret_file(cls.NAME, key, env_file))
                elif key in raw:
                    values[key] = _coerce(cls.NAME, key, kind, raw[key])
                elif key + "_file" in raw and key in SECRET_KEYS:
                    values[key] = Secret(_read_secret_file(cls.NAME, key, raw[key + "_file"]))
            except SettingsError as exc:
                problems.append(str(exc))
        sections[cls.NAME] = cls(values, _subsections(parser, cls, problems))
        problems.extend(sections[cls.NAME].problems())
    if problems:
        raise SettingsError("invalid configuration%s:\n  %s"
                            % (" in " + path if path else "", "\n  ".join(problems)))
    return Settings(sections, path)
