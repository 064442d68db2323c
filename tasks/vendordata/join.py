"""Which join credential a VM gets, making it, and how the guest is shown it.

Only an Active Directory computer object is joined with a credential: a Windows
VM gets an offline domain-join blob (``[vendordata] windows_join = odj``, for
``djoin /requestODJ``) or a one-time machine password (``password``, for an
UnsecureJoin); a Linux VM with ``[directory] linux = computer`` a one-time
password for ``adcli join --one-time-password``. Plain LDAP entries and every
other VM get their names and what was registered, no secret.
"""

import datetime
import secrets
import string
from typing import Any, Dict, Optional

from novahooks.event import InstanceEvent
from novahooks.settings import Settings
from tasks.backends.directory import ad
from tasks.vendordata import odj

PASSWORD_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits


def method(event: InstanceEvent, settings: Settings) -> Optional[str]:
    """odj, password or None (no credential) for this VM."""
    if settings.directory.driver != "ad":
        return None
    if ad.is_windows(event):
        return settings.vendordata.windows_join
    return "password" if settings.directory.linux == "computer" else None


def new_password() -> str:
    """Letters and digits only: safe in unattend XML, PowerShell and shell quoting alike,
    and of all three classes, which AD's complexity rule asks for."""
    while True:
        password = "".join(secrets.choice(_ALPHABET) for _ in range(PASSWORD_LENGTH))
        if any(c.islower() for c in password) and any(c.isupper() for c in password) \
                and any(c.isdigit() for c in password):
            return password


def issue(kind: str, event: InstanceEvent, directory: Any, settings: Settings,
          timeout: float) -> Dict[str, str]:
    """Make the credential in AD (the computer object exists already); the secret to store.

    Either way the object must have no password yet (a joined machine keeps its own):
    set_machine_password checks that itself, Samba's provision is asked only after it.
    """
    name = ad.computer_name(event.hostname)
    if kind == "odj":
        directory.check_unjoined(event)
        return {"odj_blob": odj.provision(settings, name, directory.ou, timeout)}
    password = new_password()
    directory.set_machine_password(event, password)
    return {"password": password}


def shown(kind: str, secret: Dict[str, str], event: InstanceEvent, settings: Settings,
          expires_at: float) -> Dict[str, Any]:
    """The ``join`` part of the answer: what the guest's first-boot script reads."""
    name = ad.computer_name(event.hostname)
    answer = {"domain": (settings.directory.dns_domain or "").strip(".").lower(),
              "computer_name": name,
              "expires_at": datetime.datetime.fromtimestamp(
                  expires_at, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if kind == "odj":
        answer.update(method="odj", odj_blob=secret["odj_blob"])
    elif ad.is_windows(event):
        answer.update(method="unsecure_join", machine_password=secret["password"])
    else:
        answer.update(method="one_time_password", one_time_password=secret["password"])
    return answer
