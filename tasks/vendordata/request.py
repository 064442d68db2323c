"""What Nova's DynamicJSON provider sends, read into the event every driver takes.

Nova (nova/api/metadata/vendordata_dynamic.py) POSTs ``project-id``,
``instance-id``, ``image-id``, ``user-data``, ``hostname``, ``metadata`` and
``boot-roles``. There is no os_type, flavor or address: the OS comes from the
instance metadata key or image list of ``[vendordata]``, and the event is a
pre-boot one (``addresses`` None), as the create_instance hook's was.
"""

import json
from typing import Any, Dict

from novahooks.event import InstanceEvent, new_event
from novahooks.settings import VendordataSettings
from tasks import validate
from tasks.errors import InvalidEvent

#: The answer to a body larger than this is 413, unread (Nova's user-data is <= 64 KiB).
MAX_BODY = 256 * 1024


def _string_map(value: Any, field: str) -> Dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidEvent(field, "expected an object of strings")
    return dict(value)


def os_type(metadata: Dict[str, str], image: Any, settings: VendordataSettings) -> Any:
    """windows/linux/... as the instance metadata says, else by the image; None: unknown."""
    named = metadata.get(settings.os_metadata_key, "").strip().lower()
    if named:
        return named
    if image and image in settings.windows_images:
        return "windows"
    return None


def parse(body: bytes, settings: VendordataSettings) -> InstanceEvent:
    """The validated pre-boot event; InvalidEvent names Nova's field that is wrong."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidEvent("body", "not JSON: %s" % exc) from None
    if not isinstance(data, dict):
        raise InvalidEvent("body", "expected a JSON object")
    uuid = data.get("instance-id")
    if not isinstance(uuid, str):
        raise InvalidEvent("instance-id", "missing or not text")
    hostname = data.get("hostname")
    if hostname is not None and not isinstance(hostname, str):
        raise InvalidEvent("hostname", "not text")
    metadata = _string_map(data.get("metadata"), "metadata")
    image = data.get("image-id")
    event = new_event("create", uuid.lower(), hostname or None,
                      project_id=data.get("project-id"), image=image,
                      os_type=os_type(metadata, image, settings), metadata=metadata,
                      addresses=None, source="vendordata")
    try:
        return validate.event(event, needs_hostname=False)
    except InvalidEvent as exc:
        names = {"uuid": "instance-id", "image": "image-id", "project_id": "project-id"}
        if exc.field not in names:
            raise
        raise InvalidEvent(names[exc.field], str(exc).split(": ", 1)[-1]) from None
