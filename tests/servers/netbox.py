"""A real NetBox on loopback for the demo and the tests, never a mock of one.

NetBox is slow to set up (a ~2 minute pip install, 7-11 minutes of migrations),
so both are done once and cached under CACHE_DIR, keyed by NetBox version: the
venv, and a pg_dump of a migrated database holding an admin user and a v1 API
token. Each start clones that database (restored once into a template
database) and runs gunicorn on a free port: ~20 s from call to a ready API.
"""

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional

from tests.servers.base import (CACHE_DIR, Process, Server, ServerError,
                                find_python, free_port, wait_for)

NETBOX_VERSION = "4.7.3"
HOME = CACHE_DIR / f"netbox-{NETBOX_VERSION}"
VENV = HOME / "venv"
DUMP = HOME / "netbox.dump"
TOKEN_FILE = HOME / "netbox-token.json"
# Cache and task queues of every launched NetBox share these Redis DBs, far
# from DB 0 where the project's own Celery broker lives.
REDIS_TASKS_DB, REDIS_CACHE_DB = 14, 15

Progress = Callable[[str], None]

# Run inside NetBox's venv by the template build: v1 tokens are deprecated in
# 4.7 but still accepted, and pynetbox sends them as "Token <40 chars>".
_CREATE_ADMIN = """
import os
from users.models import Token, User
user = User.objects.create_superuser("admin", "admin@example.invalid", os.environ["NB_PASSWORD"])
Token(version=1, user=user, token=os.environ["NB_TOKEN"], description="novahooks").save()
"""


# Run inside NetBox's venv to grow a database (the bench of a big operator's NetBox):
# NB_VMS VMs in cluster NB_CLUSTER, one interface each, and NB_IPS addresses on those
# interfaces, every one carrying the custom fields NB_FIELDS (JSON: name -> [label,
# [object types]]) as the drivers create them. bulk_create, so no changelog and no
# search cache: what NetBox's queries scan, not what its history holds.
_GROW = """
import ipaddress, json, os, uuid
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from core.models import ObjectType
from extras.models import CustomField
from ipam.models import IPAddress, Prefix
from virtualization.models import Cluster, ClusterType, VirtualMachine, VMInterface
vms, ips = int(os.environ["NB_VMS"]), int(os.environ["NB_IPS"])
fields = json.loads(os.environ["NB_FIELDS"])
network = ipaddress.ip_network(os.environ["NB_NETWORK"])
with transaction.atomic():
    for name, (label, types) in fields.items():
        field = CustomField.objects.create(name=name, label=label, type="text")
        field.object_types.set([ObjectType.objects.get_by_natural_key(*t.split("."))
                                for t in types])
    kind = ClusterType.objects.create(name=os.environ["NB_CLUSTER_TYPE"],
                                      slug=os.environ["NB_CLUSTER_TYPE_SLUG"])
    cluster = Cluster.objects.create(name=os.environ["NB_CLUSTER"], type=kind, status="active")
    Prefix.objects.create(prefix=str(network), status="active")
    uuids = [str(uuid.uuid4()) for n in range(vms)]  # never one a test or bench makes
    made = VirtualMachine.objects.bulk_create(
        [VirtualMachine(name="grown-%06d" % n, cluster=cluster, status="active", vcpus=1,
                        memory=2048, disk=20000, custom_field_data={
                            "nova_instance_uuid": uuids[n], "nova_project_id": "grown"})
         for n in range(vms)], batch_size=5000)
    ifaces = VMInterface.objects.bulk_create(
        [VMInterface(virtual_machine=vm, name="private") for vm in made], batch_size=5000)
    iface_type = ContentType.objects.get_for_model(VMInterface)
    hosts = network.hosts()
    IPAddress.objects.bulk_create(
        [IPAddress(address="%s/%d" % (next(hosts), network.prefixlen), status="active",
                   dns_name="grown-%06d.grown.example.test" % (n % vms),
                   assigned_object_type=iface_type, assigned_object_id=ifaces[n % vms].id,
                   custom_field_data={"nova_instance_uuid": uuids[n % vms]})
         for n in range(ips)], batch_size=5000)
print("grown: %d VMs, %d interfaces, %d addresses" % (
    VirtualMachine.objects.count(), VMInterface.objects.count(), IPAddress.objects.count()))
"""


def _python312() -> str:
    """NetBox 4.7 needs Python >= 3.12, which is not the project's own interpreter."""
    return find_python("3.12", "NOVAHOOKS_NETBOX_PYTHON")


def _run(argv: List[str], progress: Optional[Progress] = None,
         env: Optional[Dict[str, str]] = None) -> None:
    """Run a setup step; echo its output when asked, so long steps are visibly alive."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    lines: List[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
        if progress is not None and line.strip() and "WARNING: Location" not in line:
            progress("  " + line.rstrip())
    if proc.wait() != 0:
        raise ServerError(f"{' '.join(argv[:4])} failed:\n" + "\n".join(lines[-30:]))


def _pg(tool: str, host: str, port: int, *args: str) -> List[str]:
    return [tool, "-h", host, "-p", str(port), "-U", "postgres", *args]


def _drop(host: str, port: int, database: str) -> None:
    _run(_pg("dropdb", host, port, "--if-exists", "--force", database))


def ensure_installed(progress: Progress = print) -> Path:
    """Build NetBox's own venv once; a killed build never leaves a half venv in place.

    The venv is built under a temporary name and renamed, so its console-script
    shebangs point at the temporary path: always run `VENV/bin/python -m ...`.
    """
    marker = VENV / ".novahooks-complete"
    if marker.exists():
        return VENV
    HOME.mkdir(parents=True, exist_ok=True)
    tmp = HOME / f"venv.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    progress(f"netbox: installing NetBox {NETBOX_VERSION} into {VENV} (~2 minutes)")
    _run([_python312(), "-m", "venv", str(tmp)], progress)
    _run([str(tmp / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off",
          f"netbox=={NETBOX_VERSION}", "gunicorn"], progress)
    shutil.rmtree(VENV, ignore_errors=True)
    tmp.rename(VENV)
    marker.write_text(NETBOX_VERSION + "\n")
    progress(f"netbox: installed in {time.monotonic() - started:.0f}s")
    return VENV


def _configure(root: Path, database: str, pg_host: str, pg_port: int,
               redis_port: int, redis_password: str = "") -> Dict[str, str]:
    """Write NETBOX_ROOT/conf/configuration.py; return the environment that selects it."""
    (root / "conf").mkdir(parents=True, exist_ok=True)
    redis = {"HOST": "127.0.0.1", "PORT": redis_port, "PASSWORD": redis_password,
             "SSL": False}
    config = {
        "ALLOWED_HOSTS": ["*"],
        "DATABASE": {"ENGINE": "django.db.backends.postgresql", "NAME": database,
                     "USER": "postgres", "PASSWORD": "", "HOST": pg_host, "PORT": str(pg_port)},
        "REDIS": {"tasks": {**redis, "DATABASE": REDIS_TASKS_DB},
                  "caching": {**redis, "DATABASE": REDIS_CACHE_DB}},
        "SECRET_KEY": secrets.token_urlsafe(48),
        "API_TOKEN_PEPPERS": {1: secrets.token_urlsafe(48)},
        "CENSUS_REPORTING_ENABLED": False,
        "ISOLATED_DEPLOYMENT": True,
    }
    text = "".join(f"{key} = {value!r}\n" for key, value in config.items())
    (root / "conf" / "configuration.py").write_text(text)
    return {"NETBOX_ROOT": str(root)}


def ensure_template(progress: Progress = print, pg_host: str = "127.0.0.1",
                    pg_port: int = 5432) -> Path:
    """Migrate a scratch database once and keep its dump: migrating takes 7-11 minutes."""
    if DUMP.exists() and TOKEN_FILE.exists():
        return DUMP
    python = str(ensure_installed(progress) / "bin" / "python")
    scratch = f"novahooks_netbox_build_{os.getpid()}"
    build = HOME / f"build-{os.getpid()}"
    env = _configure(build, scratch, pg_host, pg_port, 6379)
    creds = {"username": "admin", "password": secrets.token_urlsafe(16),
             "token": secrets.token_hex(20)}
    started = time.monotonic()
    progress(f"netbox: migrating a new database {scratch} (7-11 minutes on 2 cores)")
    _drop(pg_host, pg_port, scratch)
    _run(_pg("createdb", pg_host, pg_port, scratch))
    try:
        _run([python, "-m", "netbox", "migrate", "--no-input"], progress, env)
        progress(f"netbox: migrated in {time.monotonic() - started:.0f}s; creating admin and token")
        _run([python, "-m", "netbox", "shell", "-c", _CREATE_ADMIN], progress,
             {**env, "NB_PASSWORD": creds["password"], "NB_TOKEN": creds["token"]})
        tmp = DUMP.with_suffix(f".tmp-{os.getpid()}")
        _run(_pg("pg_dump", pg_host, pg_port, "-Fc", "-d", scratch, "-f", str(tmp)))
        _write_private(TOKEN_FILE, json.dumps(creds, indent=2) + "\n")
        tmp.rename(DUMP)
    finally:
        _drop(pg_host, pg_port, scratch)
        shutil.rmtree(build, ignore_errors=True)
    progress(f"netbox: template ready in {time.monotonic() - started:.0f}s: {DUMP} "
             f"({DUMP.stat().st_size // 1024} KiB)")
    return DUMP


def _write_private(path: Path, text: str) -> None:
    """Create the file 0600 from its first byte: it holds the admin password and token."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _fresh_token(pg_host: str, pg_port: int, database: str, template_token: str) -> str:
    """Replace the cloned template's v1 token with one this NetBox alone accepts.

    Every clone holds the dump's token, so a token read from the cache (or from an
    earlier run) would open every later NetBox too. A v1 token is its plaintext
    column, so one UPDATE (sent on stdin, not argv) is the whole change.
    """
    token = secrets.token_hex(20)
    sql = (f"UPDATE users_token SET plaintext = '{token}', description = 'novahooks run' "
           f"WHERE version = 1 AND plaintext = '{template_token}';\n")
    done = subprocess.run(_pg("psql", pg_host, pg_port, "-d", database, "-v", "ON_ERROR_STOP=1",
                              "-tA"), input=sql, capture_output=True, text=True)
    if done.returncode != 0 or done.stdout.strip() != "UPDATE 1":
        raise ServerError(f"netbox: could not replace the template token in {database}: "
                          f"{(done.stderr or done.stdout).strip()[-300:]}")
    return token


def _template_db(pg_host: str, pg_port: int) -> str:
    """Restore the dump once into a template database; `createdb -T` then takes 0.4 s.

    Named after the dump's token so a rebuilt dump gets a fresh template, and
    restored under a scratch name then renamed so a killed restore is never used.
    """
    digest = hashlib.sha256(TOKEN_FILE.read_bytes()).hexdigest()[:10]
    name = f"novahooks_netbox_tpl_{NETBOX_VERSION.replace('.', '_')}_{digest}"
    exists = subprocess.run(_pg("psql", pg_host, pg_port, "-d", "postgres", "-tAc",
                                f"SELECT 1 FROM pg_database WHERE datname = '{name}'"),
                            capture_output=True, text=True, check=True).stdout.strip()
    if exists != "1":
        scratch = f"{name}_tmp{os.getpid()}"
        _drop(pg_host, pg_port, scratch)
        _run(_pg("createdb", pg_host, pg_port, scratch))
        _run(_pg("pg_restore", pg_host, pg_port, "--no-owner", "-d", scratch, str(DUMP)))
        try:
            _run(_pg("psql", pg_host, pg_port, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc",
                     f'ALTER DATABASE "{scratch}" RENAME TO "{name}"'))
        except ServerError:
            _drop(pg_host, pg_port, scratch)  # another process restored it first
    return name


def grown_template(vms: int, ips: int, cluster: str, cluster_type: str,
                   fields: Dict[str, object], network: str = "10.128.0.0/15",
                   progress: Progress = print, pg_host: str = "127.0.0.1",
                   pg_port: int = 5432) -> str:
    """A template database: the migrated one grown by ``vms`` VMs and ``ips`` addresses.

    Loading takes minutes, so it is done once: kept as a dump beside the migrated
    one (keyed by what was loaded) and restored into a template database like it.
    """
    base = _template_db(pg_host, pg_port)
    key = hashlib.sha256(json.dumps([base, vms, ips, cluster, cluster_type, fields, network,
                                     _GROW], sort_keys=True).encode()).hexdigest()[:10]
    name = f"{base}_grown_{key}"
    dump = HOME / f"grown-{key}.dump"
    exists = subprocess.run(_pg("psql", pg_host, pg_port, "-d", "postgres", "-tAc",
                                f"SELECT 1 FROM pg_database WHERE datname = '{name}'"),
                            capture_output=True, text=True, check=True).stdout.strip()
    if exists == "1":
        return name
    scratch = f"{name}_tmp{os.getpid()}"
    _drop(pg_host, pg_port, scratch)
    started = time.monotonic()
    if dump.exists():
        _run(_pg("createdb", pg_host, pg_port, scratch))
        _run(_pg("pg_restore", pg_host, pg_port, "--no-owner", "-d", scratch, str(dump)))
    else:
        progress(f"netbox: growing a database by {vms} VMs and {ips} addresses (minutes)")
        _run(_pg("createdb", pg_host, pg_port, "-T", base, scratch))
        build = HOME / f"grow-{os.getpid()}"
        env = _configure(build, scratch, pg_host, pg_port, 6379)
        slug = "".join(c if c.isalnum() else "-" for c in cluster_type.lower()).strip("-")
        try:
            _run([str(VENV / "bin" / "python"), "-m", "netbox", "shell", "-c", _GROW], progress,
                 {**env, "NB_VMS": str(vms), "NB_IPS": str(ips), "NB_CLUSTER": cluster,
                  "NB_CLUSTER_TYPE": cluster_type, "NB_CLUSTER_TYPE_SLUG": slug,
                  "NB_FIELDS": json.dumps(fields), "NB_NETWORK": network})
            _run(_pg("psql", pg_host, pg_port, "-d", scratch, "-qc", "VACUUM ANALYZE"))
            tmp = dump.with_suffix(f".tmp-{os.getpid()}")
            _run(_pg("pg_dump", pg_host, pg_port, "-Fc", "-d", scratch, "-f", str(tmp)))
            tmp.rename(dump)
        except BaseException:
            _drop(pg_host, pg_port, scratch)
            raise
        finally:
            shutil.rmtree(build, ignore_errors=True)
    _run(_pg("psql", pg_host, pg_port, "-d", scratch, "-qc", "ANALYZE"))
    try:
        _run(_pg("psql", pg_host, pg_port, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc",
                 f'ALTER DATABASE "{scratch}" RENAME TO "{name}"'))
    except ServerError:
        _drop(pg_host, pg_port, scratch)  # another process made it first
    progress(f"netbox: grown template {name} ready in {time.monotonic() - started:.0f}s")
    return name


class NetBoxServer(Server):
    """A running NetBox: `url` and `token` for clients; `stop()` also drops its database."""

    def __init__(self, url: str, token: str, database: str, process: Process,
                 pg_host: str, pg_port: int) -> None:
        self.url, self.token, self.database = url, token, database
        self.process = process
        self._pg = (pg_host, pg_port)

    def stop(self) -> None:
        """Stop gunicorn's whole process group, then drop the database it used."""
        self.process.stop()
        _drop(*self._pg, self.database)


def _status_ok(url: str, token: str) -> bool:
    request = urllib.request.Request(f"{url}/api/status/",
                                     headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status == 200


def start(workdir: Path, redis_port: int = 6379, pg_host: str = "127.0.0.1", pg_port: int = 5432,
          progress: Progress = print, redis_password: str = "",
          template: Optional[str] = None) -> NetBoxServer:
    """Start NetBox on a free port with a database of its own; return once its API answers.

    ``template``: the database to clone (:func:`grown_template`); the migrated one if None.
    """
    python = str(ensure_installed(progress) / "bin" / "python")
    ensure_template(progress, pg_host, pg_port)
    template = template or _template_db(pg_host, pg_port)
    if TOKEN_FILE.stat().st_mode & 0o077:  # a cache written before it was created 0600
        TOKEN_FILE.chmod(0o600)
    template_token = json.loads(TOKEN_FILE.read_text())["token"]
    database = f"novahooks_netbox_{os.getpid()}_{secrets.token_hex(4)}"
    _run(_pg("createdb", pg_host, pg_port, "-T", template, database))
    try:
        token = _fresh_token(pg_host, pg_port, database, template_token)
    except BaseException:
        _drop(pg_host, pg_port, database)
        raise
    workdir.mkdir(parents=True, exist_ok=True)
    env = _configure(workdir / "netbox", database, pg_host, pg_port, redis_port,
                     redis_password)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "netbox.log"
    try:
        process = Process("netbox", [python, "-m", "gunicorn", "netbox.wsgi", "--bind",
                                     f"127.0.0.1:{port}", "--workers", "2", "--timeout", "120",
                                     "--no-control-socket"],  # else all share ~/.gunicorn
                          log, env=env, cwd=workdir)
    except BaseException:
        _drop(pg_host, pg_port, database)
        raise
    server = NetBoxServer(url, token, database, process, pg_host, pg_port)
    try:
        # ~20 s on an idle machine; minutes when other suites load the 2 cores
        wait_for(lambda: _status_ok(url, token), 300, "NetBox", process.proc, log)
    except BaseException:
        server.stop()
        raise
    progress(f"netbox: {url} ready (database {database})")
    return server


def main(argv: List[str]) -> int:
    """`prepare` does the slow one-time setup (CI); `serve DIR` runs one NetBox until Ctrl-C."""
    if argv[:1] == ["prepare"]:
        ensure_template(lambda line: print(line, flush=True))
        return 0
    if len(argv) == 2 and argv[0] == "serve":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so `with` drops the database
        with start(Path(argv[1])) as server:
            print(f"url={server.url}\ntoken={server.token}\ndatabase={server.database}", flush=True)
            try:
                while server.process.proc.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0
    print("usage: python -m tests.servers.netbox prepare | serve DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
