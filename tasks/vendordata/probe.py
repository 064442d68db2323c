"""What ``novahooks check`` asks the running vendordata service: reachable, TLS, auth.

It asks as Nova would: over HTTPS verified against ``[vendordata] ca_file`` (Nova's
``vendordata_dynamic_ssl_certfile``), once without credentials (must be refused)
and once with ``[vendordata] username``/``password`` (must be let in).
"""

import requests

from novahooks.settings import Settings
from tasks.errors import AuthFailed, BackendUnavailable, PermanentError


def url_of(settings: Settings) -> str:
    config = settings.vendordata
    if config.url:
        return config.url.rstrip("/")
    host = "127.0.0.1" if config.address in ("0.0.0.0", "") else config.address
    return "https://%s:%d" % (host, config.port)


def probe(settings: Settings, timeout: float = 5.0) -> str:
    config = settings.vendordata
    url = url_of(settings)
    verify = config.ca_file or True
    try:
        anonymous = requests.get(url + "/healthz", verify=verify, timeout=timeout)
        known = requests.get(url + "/healthz", verify=verify, timeout=timeout,
                             auth=(config.username, config.password.reveal()))
    except requests.exceptions.SSLError as exc:
        raise AuthFailed("%s: TLS not verified against %s: %s" % (
            url, config.ca_file or "the system CAs", exc), backend="vendordata") from None
    except requests.exceptions.RequestException as exc:
        raise BackendUnavailable("%s unreachable: %s" % (url, type(exc).__name__),
                                 backend="vendordata") from None
    if anonymous.status_code != 401:
        raise PermanentError("%s answers HTTP %d without credentials (expected 401)"
                             % (url, anonymous.status_code), backend="vendordata")
    if known.status_code != 200:
        raise AuthFailed("%s refuses [vendordata] username %s (HTTP %d)"
                         % (url, config.username, known.status_code), backend="vendordata")
    return "%s answers over verified TLS; refuses anonymous callers, accepts user %s" % (
        url, config.username)
