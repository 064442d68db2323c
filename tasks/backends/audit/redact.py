"""Keep every configured secret out of audit records, whatever text carries it.

A record is kept forever, copied to a SIEM and signed: a credential that slips
into one (a backend's error message quoting a URL with a token, a driver's
detail) cannot be taken back. So before a record is written, every value of a
``Secret`` setting is replaced by ``***`` in every string of the record.
"""

from typing import Any, List

from novahooks.settings import Secret, Section

MASK = "***"
#: Shorter values would mask ordinary words; no real credential is this short.
MIN_LENGTH = 6


def secrets_of(settings: Any) -> List[str]:
    """The values of every Secret setting in every section, longest first."""
    found = set()
    sections = [s for s in vars(settings).values() if isinstance(s, Section)]
    sections += [rule for s in list(sections) for rule in s.rules.values()]
    for section in sections:
        for key in section.FIELDS:
            value = getattr(section, key, None)
            if isinstance(value, Secret) and len(value.reveal()) >= MIN_LENGTH:
                found.add(value.reveal())
    return sorted(found, key=len, reverse=True)


def scrub(value: Any, secrets: List[str]) -> Any:
    """``value`` with each secret masked, in strings, keys, lists and dicts alike."""
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {scrub(k, secrets): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    return value
