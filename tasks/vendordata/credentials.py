"""Each instance's join credential, encrypted at rest, in the ledger's database.

Nova asks for vendordata again on every metadata read outside its 15 s cache,
and the guest must get the same credential each time: the first read issues it,
later ones read it back. Only the Fernet token (AES-128-CBC + HMAC-SHA256, from
``cryptography``) is stored; the keys stay in ``[vendordata] secret_key_file``
(one per line, the first encrypts, all decrypt: a key is rotated by putting the
new one first). After ``credential_ttl`` the token is wiped and the row kept, so
the instance is never issued a second credential (a second one would reset the
password of a machine that joined with the first); the instance's delete
removes the row. Issue and expiry are read off the database's clock, so two
vendordata hosts whose clocks differ agree on when a credential expires.
"""

import json
from typing import Any, Dict, NamedTuple, Optional

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Column, Float, MetaData, String, Table, Text, delete, insert, select, \
    update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from tasks.errors import BackendUnavailable, Misconfigured, PermanentError
from tasks.ledger import database_now

metadata = MetaData()

credentials = Table(
    "vendordata_credentials", metadata,
    Column("instance_uuid", String(36), primary_key=True),
    Column("method", String(16), nullable=False),
    Column("token", Text),
    Column("issued_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)


class Stored(NamedTuple):
    method: str
    #: None once expired.
    secret: Optional[Dict[str, str]]
    issued_at: float
    expires_at: float


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def load_keys(path: Optional[str]) -> MultiFernet:
    """The keys of ``[vendordata] secret_key_file``; Misconfigured says what is wrong."""
    if not path:
        raise Misconfigured("[vendordata] secret_key_file is not set (novahooks vendordata "
                            "--generate-key PATH makes one)", backend="vendordata")
    try:
        with open(path) as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError as exc:
        raise Misconfigured("[vendordata] secret_key_file: cannot read %s: %s"
                            % (path, exc.strerror), backend="vendordata") from None
    try:
        keys = [Fernet(line.encode("ascii")) for line in lines]
    except (ValueError, UnicodeEncodeError):
        raise Misconfigured("[vendordata] secret_key_file: %s holds a line that is not a "
                            "Fernet key (32 url-safe base64 bytes)" % path,
                            backend="vendordata") from None
    if not keys:
        raise Misconfigured("[vendordata] secret_key_file: %s is empty" % path,
                            backend="vendordata")
    return MultiFernet(keys)


def _unavailable(exc: Exception) -> BackendUnavailable:
    return BackendUnavailable("credential store unavailable: %s" % str(exc).splitlines()[0],
                              backend="vendordata")


class CredentialStore(object):
    def __init__(self, engine: Engine, keys: MultiFernet) -> None:
        self.engine = engine
        self.keys = keys
        try:
            metadata.create_all(engine)
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    def get(self, instance_uuid: str) -> Optional[Stored]:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(select(credentials).where(
                    credentials.c.instance_uuid == instance_uuid)).mappings().first()
        except OperationalError as exc:
            raise _unavailable(exc) from exc
        if row is None:
            return None
        secret = None
        if row["token"] is not None and row["expires_at"] > self.now():
            try:
                secret = json.loads(self.keys.decrypt(row["token"].encode("ascii")))
            except InvalidToken:
                raise PermanentError("the stored credential of %s does not decrypt with "
                                     "[vendordata] secret_key_file (a key removed?)"
                                     % instance_uuid, backend="vendordata") from None
        elif row["token"] is not None:
            self._write(update(credentials).where(
                credentials.c.instance_uuid == instance_uuid).values(token=None))
        return Stored(row["method"], secret, row["issued_at"], row["expires_at"])

    def put(self, instance_uuid: str, method: str, secret: Dict[str, str],
            ttl: float) -> Stored:
        now = self.now()
        token = self.keys.encrypt(json.dumps(secret).encode()).decode("ascii")
        try:
            self._write(insert(credentials).values(
                instance_uuid=instance_uuid, method=method, token=token, issued_at=now,
                expires_at=now + ttl))
        except IntegrityError:
            # Callers hold the instance's lock; a row here means a bug, not a race.
            raise PermanentError("a credential for %s exists already" % instance_uuid,
                                 backend="vendordata") from None
        return Stored(method, secret, now, now + ttl)

    def now(self) -> float:
        try:
            return database_now(self.engine)
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    def forget(self, instance_uuid: str) -> None:
        self._write(delete(credentials).where(credentials.c.instance_uuid == instance_uuid))

    def raw(self, instance_uuid: str) -> Optional[Dict[str, Any]]:
        """The row as stored (for tests and operators: shows that only ciphertext is kept)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(credentials).where(
                credentials.c.instance_uuid == instance_uuid)).mappings().first()
        return dict(row) if row is not None else None

    def _write(self, statement: Any) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(statement)
        except OperationalError as exc:
            raise _unavailable(exc) from exc
