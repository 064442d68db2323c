"""One typed settings object, read from an INI file and the environment.

INI because the same file is read inside Nova (Python 3.6+, standard library
only, where neither TOML nor pydantic is available) and by the workers.
Precedence: defaults < file < environment (``NOVAHOOKS_<SECTION>_<KEY>``).
Secrets (``token``, ``password``, ``tsig_secret``) may also come from a file
named by ``<key>_file``; they are held in :class:`Secret`, whose repr never
shows the value, so a logged settings object leaks nothing.
"""

import configparser
import os
from typing import Any, Dict, Mapping, Optional

DEFAULT_PATH = "/etc/novahooks/novahooks.conf"
SECRET_KEYS = ("token", "password", "tsig_secret")


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


class Section(object):
    """A group of typed settings; subclasses declare fields as class attributes.

    ``FIELDS`` maps key -> (type, default); types are str, int, float, bool,
    list (comma-separated strings), Secret, or None for "optional string".
    """

    NAME = ""
    FIELDS = {}  # type: Dict[str, Tuple[Any, Any]]

    def __init__(self, values: Mapping[str, Any]) -> None:
        for key, (_, default) in self.FIELDS.items():
            setattr(self, key, values.get(key, default))

    def as_dict(self) -> Dict[str, Any]:
        return {key: getattr(self, key) for key in self.FIELDS}

    def __repr__(self) -> str:
        return "%s(%r)" % (type(self).__name__, self.as_dict())


class OutboxSettings(Section):
    NAME = "outbox"
    FIELDS = {
        "path": (str, "/var/lib/novahooks/outbox.sqlite"),
        "busy_timeout_ms": (int, 2000),
    }


class BrokerSettings(Section):
    NAME = "broker"
    FIELDS = {
        "url": (str, "redis://127.0.0.1:6379/0"),
        # Redis: a message taken by a worker that died comes back after this long. Keep
        # it above the longest task plus [retry] backoff_max (a retry waits on its worker).
        "visibility_timeout": (int, 1800),
        "connect_timeout": (float, 5.0),
    }


class RelaySettings(Section):
    NAME = "relay"
    FIELDS = {
        "poll_interval": (float, 0.2),
        "batch": (int, 200),
    }


class RetrySettings(Section):
    NAME = "retry"
    FIELDS = {
        "max_retries": (int, 8),
        "backoff_max": (int, 600),
        # A message delivered this often without finishing (its worker died each
        # time) is parked as a dead letter instead of killing workers forever.
        "max_deliveries": (int, 3),
    }


class IpamSettings(Section):
    NAME = "ipam"
    FIELDS = {
        "driver": (str, "netbox"),
        "url": (None, None),
        "token": (Secret, Secret("")),
        "verify_tls": (bool, True),
        "timeout": (float, 10.0),
    }


class InventorySettings(Section):
    NAME = "inventory"
    FIELDS = {
        "driver": (str, "netbox"),
        "url": (None, None),
        "token": (Secret, Secret("")),
        "verify_tls": (bool, True),
        "timeout": (float, 10.0),
        "cluster_type": (str, "OpenStack Nova"),
        "cluster": (str, "nova"),
        "on_delete": (str, "delete"),
    }


class DnsSettings(Section):
    NAME = "dns"
    FIELDS = {
        "driver": (str, "rfc2136"),
        "server": (str, "127.0.0.1"),
        "port": (int, 53),
        "zone": (None, None),
        "reverse_zones": (list, []),
        "tsig_key_name": (None, None),
        "tsig_secret": (Secret, Secret("")),
        "tsig_algorithm": (str, "hmac-sha256"),
        "ttl": (int, 300),
        "timeout": (float, 5.0),
    }


class DirectorySettings(Section):
    NAME = "directory"
    FIELDS = {
        "driver": (str, "ldap"),
        "url": (None, None),
        "bind_dn": (None, None),
        "password": (Secret, Secret("")),
        "base_dn": (None, None),
        "starttls": (bool, True),
        "ca_file": (None, None),
        "verify_tls": (bool, True),
        "timeout": (float, 10.0),
    }


class AuditSettings(Section):
    NAME = "audit"
    FIELDS = {
        "drivers": (list, ["jsonl"]),
        "path": (str, "/var/lib/novahooks/audit.jsonl"),
        "syslog_host": (None, None),
        "syslog_port": (int, 514),
        "app_name": (str, "novahooks"),
    }


class LedgerSettings(Section):
    NAME = "ledger"
    FIELDS = {
        # SQLite on one worker host; postgresql://... when workers run on several hosts.
        "url": (str, "sqlite:////var/lib/novahooks/ledger.sqlite"),
        # keep: a failed create leaves earlier steps' records (the dead letter says what is
        # missing); undo: remove what the earlier steps made.
        "on_permanent_failure": (str, "keep"),
        "stalled_after": (int, 900),
    }


class MetricsSettings(Section):
    NAME = "metrics"
    FIELDS = {
        # 0 = no metrics endpoint. Each worker pool (one per queue) on a host needs its
        # own port: set NOVAHOOKS_METRICS_WORKER_PORT per worker service.
        "worker_port": (int, 0),
        "relay_port": (int, 0),
        "address": (str, "127.0.0.1"),
        # prometheus-client's multiprocess files for Celery's prefork children.
        "multiproc_dir": (str, "/tmp/novahooks-metrics"),
    }


SECTIONS = (OutboxSettings, LedgerSettings, MetricsSettings, BrokerSettings, RelaySettings,
            RetrySettings, IpamSettings, InventorySettings, DnsSettings, DirectorySettings,
            AuditSettings)


class Settings(object):
    """All sections; each driver is handed only its own."""

    def __init__(self, sections: Mapping[str, Section], source: Optional[str]) -> None:
        self.source = source
        self.outbox = sections["outbox"]  # type: OutboxSettings
        self.ledger = sections["ledger"]  # type: LedgerSettings
        self.metrics = sections["metrics"]  # type: MetricsSettings
        self.broker = sections["broker"]  # type: BrokerSettings
        self.relay = sections["relay"]  # type: RelaySettings
        self.retry = sections["retry"]  # type: RetrySettings
        self.ipam = sections["ipam"]  # type: IpamSettings
        self.inventory = sections["inventory"]  # type: InventorySettings
        self.dns = sections["dns"]  # type: DnsSettings
        self.directory = sections["directory"]  # type: DirectorySettings
        self.audit = sections["audit"]  # type: AuditSettings


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


def load_settings(path: Optional[str] = None,
                  environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Read the file (if any) and the environment; fail naming every wrong key."""
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
        if name not in by_name:
            problems.append("unknown section [%s]" % name)
    sections = {}
    for cls in SECTIONS:
        values = {}  # type: Dict[str, Any]
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
        sections[cls.NAME] = cls(values)
    if problems:
        raise SettingsError("invalid configuration%s:\n  %s"
                            % (" in " + path if path else "", "\n  ".join(problems)))
    return Settings(sections, path)
