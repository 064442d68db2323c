"""The HTTP side: a Falcon WSGI app on cheroot, TLS only, http_basic only.

Nova's ``[vendordata_dynamic_auth] auth_type = http_basic`` (keystoneauth's
HTTPBasicAuth) sends ``Authorization: Basic``; a missing or wrong one is 401
before the body is read. ``GET /healthz`` (authenticated too) is what
``novahooks check`` asks. Bodies are capped (request.MAX_BODY). cheroot serves
with a fixed pool of threads ([vendordata] threads): a mass boot queues in its
listen backlog instead of spawning a thread per guest; it has
HTTP_THREADS_PER_WORKER times as many threads as the service's work pool.
"""

import base64
import binascii
import hmac
import logging
import os
import ssl
from typing import Any, Optional, Tuple

import falcon
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from novahooks.settings import Settings, VendordataSettings
from tasks import config
from tasks.errors import Misconfigured
from tasks.vendordata import request
from tasks.vendordata.service import Vendordata

LOG = logging.getLogger("novahooks.vendordata")
REALM = "novahooks vendordata"
#: HTTP threads per work thread ([vendordata] threads): an HTTP thread mostly waits, up
#: to the budget, for the work; with as few as the work has, a mass boot's answers queue
#: for HTTP threads and leave after Nova's 5 s (measured: bench/vendordata.py).
HTTP_THREADS_PER_WORKER = 8


def _credentials(header: Optional[str]) -> Optional[Tuple[str, str]]:
    if not header or not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True) \
            .decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


class BasicAuth(object):
    """Refuse every request without the configured user and password (constant time)."""

    def __init__(self, config: VendordataSettings) -> None:
        if not config.password:
            raise Misconfigured("[vendordata] password is not set (Nova's "
                                "[vendordata_dynamic_auth] password)", backend="vendordata")
        self.user = config.username.encode()
        self.password = config.password.reveal().encode()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = _credentials(req.get_header("Authorization"))
        user_ok = given is not None and hmac.compare_digest(given[0].encode(), self.user)
        password_ok = given is not None and hmac.compare_digest(given[1].encode(),
                                                                self.password)
        if not (user_ok and password_ok):
            LOG.warning("vendordata: refused %s %s from %s (%s)", req.method, req.path,
                        req.remote_addr, "no credentials" if given is None
                        else "wrong credentials")
            raise falcon.HTTPUnauthorized(
                title="unauthorized", description="Basic credentials required",
                challenges=['Basic realm="%s"' % REALM])


class Answers(object):
    def __init__(self, service: Vendordata) -> None:
        self.service = service

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        length = req.content_length
        if length is not None and length > request.MAX_BODY:
            raise falcon.HTTPContentTooLarge(
                title="too large", description="body over %d bytes" % request.MAX_BODY)
        body = req.bounded_stream.read(request.MAX_BODY + 1)
        if len(body) > request.MAX_BODY:
            raise falcon.HTTPContentTooLarge(
                title="too large", description="body over %d bytes" % request.MAX_BODY)
        answer = self.service.answer(body)
        resp.status = falcon.code_to_http_status(answer.status)
        resp.media = answer.body
        # Nova caches 15 s itself; nothing between must keep a join credential longer.
        resp.cache_control = ["no-store"]


class Health(object):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"service": REALM, "ok": True}


def _error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError,
           params: Any) -> None:
    """Every refusal as the JSON error the answers use."""
    resp.status = exc.status
    resp.media = {"error": {"code": (exc.title or "error").replace(" ", "_").lower(),
                            "message": exc.description or exc.title, "retry": False}}
    resp.set_headers(exc.headers or {})


def _crash(req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any) -> None:
    """A bug: logged with its traceback, answered without it (and with no credential)."""
    LOG.error("vendordata: %s %s failed", req.method, req.path, exc_info=exc)
    resp.status = falcon.HTTP_500
    resp.media = {"error": {"code": "internal", "message": type(exc).__name__, "retry": True}}


def make_app(service: Vendordata) -> falcon.App:
    app = falcon.App(middleware=[BasicAuth(service.config)])
    app.add_route("/", Answers(service))
    app.add_route("/healthz", Health())
    app.set_error_serializer(lambda req, resp, exc: None)
    app.add_error_handler(Exception, _crash)
    app.add_error_handler(falcon.HTTPError, _error)
    return app


def make_server(settings: Settings, service: Optional[Vendordata] = None) -> wsgi.Server:
    """The TLS server, bound and not yet serving (``.prepare()`` / ``.serve()``)."""
    config = settings.vendordata
    if not config.tls_cert_file or not config.tls_key_file:
        raise Misconfigured("[vendordata] tls_cert_file and tls_key_file are required: the "
                            "answers carry join credentials", backend="vendordata")
    server = wsgi.Server((config.address, config.port), make_app(service or Vendordata(
        settings)), numthreads=config.threads * HTTP_THREADS_PER_WORKER,
        request_queue_size=256, timeout=10, server_name="novahooks-vendordata")
    adapter = BuiltinSSLAdapter(config.tls_cert_file, config.tls_key_file)
    adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
    server.ssl_adapter = adapter
    return server


def serve(settings: Settings) -> None:
    if settings.source:
        # The shared validation (tasks/preflight.py) reaches the backends through the
        # process's settings (tasks/config.py): those must be the service's own.
        os.environ["NOVAHOOKS_CONFIG"] = str(settings.source)
        config.settings.cache_clear()
    server = make_server(settings)
    LOG.info("vendordata: serving https://%s:%d/ (%d threads)", settings.vendordata.address,
             settings.vendordata.port, settings.vendordata.threads)
    try:
        server.safe_start()
    finally:
        server.stop()
