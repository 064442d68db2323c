"""Prepare the demo NetBox for novahooks (docker-compose.yml, service "netbox-init").

Run once NetBox is up, inside NetBox's own image:
    manage.py shell --interface python --command "exec(open('/novahooks/init.py').read())"

Creates the web UI user "admin" (SUPERUSER_PASSWORD, deploy/demo.env), gives it the API
token novahooks uses (NOVAHOOKS_IPAM_TOKEN, deploy/secrets.env) and the prefixes an
operator would already have, as tests/servers/stack.py does for the test suite.
Idempotent. The token is a v1 token, like the test suite's: from NetBox 4.6 the image's
SUPERUSER_API_TOKEN creates v2 tokens, whose key NetBox picks itself.
"""

import os

from ipam.models import Prefix
from users.models import Token, User

PREFIXES = ("10.20.0.0/16", "192.168.1.0/24", "2001:db8:20::/64")

name = os.environ.get("SUPERUSER_NAME", "admin")
user = User.objects.filter(username=name).first()
if user is None:
    user = User.objects.create_superuser(name, os.environ.get("SUPERUSER_EMAIL",
                                                              "admin@example.invalid"),
                                         os.environ["SUPERUSER_PASSWORD"])
    print("created NetBox user %s" % name)

secret = os.environ["NOVAHOOKS_IPAM_TOKEN"]
if secret != os.environ.get("NOVAHOOKS_INVENTORY_TOKEN", secret):
    raise SystemExit("NOVAHOOKS_IPAM_TOKEN and NOVAHOOKS_INVENTORY_TOKEN differ: this one "
                     "NetBox serves both")
fields = {field.name for field in Token._meta.get_fields()}
if "plaintext" in fields:  # NetBox >= 4.6: v1 secret in `plaintext`, set through token=
    if not Token.objects.filter(plaintext=secret).exists():
        Token(version=1, user=user, token=secret, description="novahooks").save()
        print("created the novahooks API token")
elif not Token.objects.filter(key=secret).exists():
    Token.objects.create(user=user, key=secret, description="novahooks")
    print("created the novahooks API token")

for prefix in PREFIXES:
    _, created = Prefix.objects.get_or_create(
        prefix=prefix, defaults={"status": "active", "description": "novahooks demo"})
    if created:
        print("created prefix %s" % prefix)
