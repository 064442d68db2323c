#!/bin/sh
# Entrypoint of the demo BIND (docker-compose.yml, service "bind"), run as root before
# named drops to the bind user: writes the TSIG key from NOVAHOOKS_DNS_TSIG_SECRET
# (deploy/secrets.env: the value the dns worker signs with) and seeds each zone file
# once into /var/lib/bind, where named keeps the zone's journal.
set -eu

: "${NOVAHOOKS_DNS_TSIG_SECRET:?is not set: see deploy/secrets.env.example}"

umask 027
printf 'key "novahooks-key" {\n\talgorithm hmac-sha256;\n\tsecret "%s";\n};\n' \
    "$NOVAHOOKS_DNS_TSIG_SECRET" >/run/named/novahooks.key
chown root:bind /run/named/novahooks.key

for zone in /novahooks/db.*; do
    [ -e "/var/lib/bind/${zone##*/}" ] || cp "$zone" /var/lib/bind/
done
chown bind:bind /var/lib/bind/db.*

exec /usr/sbin/named -u bind -g -c /novahooks/named.conf
