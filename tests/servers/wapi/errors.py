"""The WAPI stand-in's errors, in the shape NIOS answers them."""

from typing import Dict, Optional


class WapiError(Exception):
    """An answer in WAPI's error shape: HTTP status, ``Error``, ``code``, ``text``."""

    def __init__(self, status: int, kind: str, code: str, text: str,
                 error: Optional[str] = None) -> None:
        super().__init__(text)
        self.status, self.code, self.text = status, code, text
        self.error = "%s: %s" % (kind, text if error is None else error)

    def body(self) -> Dict[str, str]:
        return {"Error": self.error, "code": self.code, "text": self.text}


def proto(text: str) -> WapiError:
    return WapiError(400, "AdmConProtoError", "Client.Ibap.Proto", text)


def conflict(text: str) -> WapiError:
    return WapiError(400, "AdmConDataError", "Client.Ibap.Data.Conflict", text,
                     "None (IBDataConflictError: IB.Data.Conflict:%s)" % text)


def not_found(text: str, status: int = 400) -> WapiError:
    return WapiError(status, "AdmConDataNotFoundError", "Client.Ibap.Data.NotFound", text)
