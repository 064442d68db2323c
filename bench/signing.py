"""What authenticating a task message costs, per message, side by side with not doing it.

The message is a real one: the build chain Celery makes for a two-address VM (the relay
publishes it; every worker publishes the next step's message, smaller each step). Timed
per message, in this process, no broker (the broker round trip is the same for all):

* ``json``: serialising the body, what every message costs today (the baseline);
* ``hmac``: that plus tasks/signing.py's HMAC-SHA256 on the publishing side, and the
  worker's check (signature again, constant-time compare) on the receiving side;
* ``x509``: Celery's ``auth`` serializer (celery.security, RSA-2048 via the
  cryptography package, SHA-256): sign on publish, verify on receipt.

Prints the median microseconds per message and the ratio to ``json``. Run by hand:

    .venv/bin/python bench/signing.py [--rounds 2000]
"""

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _message() -> Any:
    """(headers, body) of the build chain's first message, as Celery builds it."""
    from celery import Celery
    from tasks import chains
    from tasks.simulate import Vm, with_uuid
    from bench.inline import event_of
    app = Celery("bench-signing")
    app.config_from_object("celeryconfig")
    vm = with_uuid(Vm("bench-sign", (("10.20.0.5", "fa:16:3e:00:00:05"),
                                     ("2001:db8:20::5", "fa:16:3e:00:00:05"))))
    chain = chains.build(app, event_of(vm).to_dict())
    first = chain.tasks[0]
    rest = [t.clone() for t in chain.tasks[1:]]
    headers, _, body, _ = app.amqp.as_task_v2(
        "11111111-2222-4333-8444-555555555555", first.task, args=first.args,
        kwargs=first.kwargs, chain=[dict(t) for t in reversed(rest)])
    return headers, body


def _x509() -> Any:
    """Celery's SecureSerializer with a fresh RSA-2048 key and its self-signed certificate."""
    from celery.security.certificate import Certificate, CertStore
    from celery.security.key import PrivateKey
    from celery.security.serialization import SecureSerializer
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "novahooks-bench")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    certificate = Certificate(cert.public_bytes(serialization.Encoding.PEM).decode())
    store = CertStore()
    store.add_cert(certificate)
    return SecureSerializer(PrivateKey(pem_key), certificate, store, "sha256", "json")


def _time(call: Callable[[], Any], rounds: int) -> float:
    """Median microseconds of one call, over ``rounds`` calls in batches of 50."""
    samples: List[float] = []
    for _ in range(max(1, rounds // 50)):
        started = time.perf_counter()
        for _ in range(50):
            call()
        samples.append((time.perf_counter() - started) / 50 * 1e6)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    from kombu.serialization import dumps

    from tasks import signing
    headers, body = _message()
    secret = b"bench-signing-key-" + b"k" * 32
    _, _, text = dumps(body, serializer="json")
    raw = text.encode("utf-8")

    class Received(object):
        def __init__(self, data: bytes, head: Dict[str, Any]) -> None:
            self.body, self.headers = data, head

    signed = dict(headers)
    signing.sign(signed, raw, secret)
    received = Received(raw, signed)
    assert signing.refusal(received, secret, 1 << 20) is None
    x509 = _x509()
    packed = x509.serialize(body)
    assert x509.deserialize(packed) == json.loads(text)

    def hmac_publish() -> None:
        _, _, data = dumps(body, serializer="json")
        signing.sign(dict(headers), data.encode("utf-8"), secret)

    results = {
        "json": {"publish": _time(lambda: dumps(body, serializer="json"), args.rounds),
                 "receive": 0.0},
        "hmac": {"publish": _time(hmac_publish, args.rounds),
                 "receive": _time(lambda: signing.refusal(received, secret, 1 << 20),
                                  args.rounds)},
        "x509": {"publish": _time(lambda: x509.serialize(body), args.rounds // 5),
                 "receive": _time(lambda: x509.deserialize(packed), args.rounds)},
    }
    base = results["json"]["publish"]
    print("message: build chain, body %d bytes, signed headers %s"
          % (len(raw), ", ".join(signing.SIGNED_HEADERS)))
    print("%-6s %12s %12s %12s %14s" % ("", "publish us", "receive us", "total us",
                                        "total / json"))
    for name, row in results.items():
        total = row["publish"] + row["receive"]
        row["total"] = total
        print("%-6s %12.1f %12.1f %12.1f %13.2fx" % (name, row["publish"], row["receive"],
                                                     total, total / base))
    if args.json:
        args.json.write_text(json.dumps({"body_bytes": len(raw), "us": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
