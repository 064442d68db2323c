"""What the hook side reads of the configuration: ``[outbox]`` and ``[gate]``, nothing else.

The hooks run as the Nova service user inside nova-api and nova-compute. They
need the outbox's path and the gate's settings; they have no use for the
backends' credentials, and Nova should not hold them. So the hook side reads
only those two sections (``load_settings(only=...)``): every other section,
its keys and the secret files it names are never opened, and a configuration
whose secrets the Nova user may not read still gives the hooks what they need.

Where the rest of the file must stay unreadable to Nova too, the two sections
go in a file of their own: ``NOVAHOOKS_HOOK_CONFIG``, else
``/etc/novahooks/hooks.conf`` when it exists, else the file every other part
reads (``NOVAHOOKS_CONFIG``, ``/etc/novahooks/novahooks.conf``). The relay
reads its ``[outbox]`` and ``[gate]`` from the main file: give both files the
same two sections.
"""

import os
from typing import Mapping, Optional

from novahooks.settings import Settings, load_settings

HOOK_PATH = "/etc/novahooks/hooks.conf"
HOOK_SECTIONS = ("outbox", "gate")


def hook_config_path(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The hook side's own file, or None to read the main one."""
    env = os.environ if environ is None else environ
    return env.get("NOVAHOOKS_HOOK_CONFIG") or (HOOK_PATH if os.path.exists(HOOK_PATH)
                                                else None)


def load_hook_settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """``[outbox]`` and ``[gate]`` as the hooks see them; every other section is defaults."""
    return load_settings(hook_config_path(environ), environ, only=HOOK_SECTIONS)
