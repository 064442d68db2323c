#!/bin/sh
# Write the env files docker-compose.yml reads -- secrets.env, broker.env, signing.env,
# flower.env, demo.env --
# with fresh random values and mode 600, keeping any that already exist. Needs only a
# POSIX shell, /dev/urandom, base64 and od.
#
#   sh deploy/gen-secrets.sh [DIR]        DIR defaults to the directory of this script
#
# The keys are those of the matching *.env.example files (tests/test_compose.py checks
# that both agree).
set -eu

dir="${1:-$(dirname "$0")}"
umask 077

b64() { head -c "$1" /dev/urandom | base64 | tr -d '\n'; }
hex() { head -c "$1" /dev/urandom | od -An -v -tx1 | tr -d ' \n'; }
# Passwords without the characters that need quoting anywhere (+ / =).
password() { b64 "$1" | tr '+/' '-_' | tr -d '='; }

create() {
    if [ -e "$dir/$1" ]; then
        echo "keeping $dir/$1"
        return 1
    fi
    echo "writing $dir/$1"
}

if create secrets.env; then
    token="$(hex 20)"
    cat >"$dir/secrets.env" <<EOF
NOVAHOOKS_IPAM_TOKEN=$token
NOVAHOOKS_INVENTORY_TOKEN=$token
NOVAHOOKS_DNS_TSIG_SECRET=$(b64 32)
NOVAHOOKS_DIRECTORY_PASSWORD=$(password 18)
NOVAHOOKS_NOTIFICATIONS_PASSWORD=$(password 18)
EOF
fi

if create broker.env; then
    echo "NOVAHOOKS_BROKER_PASSWORD=$(password 24)" >"$dir/broker.env"
fi

if create signing.env; then
    echo "NOVAHOOKS_BROKER_SIGNING_KEY=$(password 48)" >"$dir/signing.env"
fi

if create flower.env; then
    echo "FLOWER_BASIC_AUTH=admin:$(password 18)" >"$dir/flower.env"
fi

if create demo.env; then
    db="$(password 18)"
    redis="$(password 18)"
    cat >"$dir/demo.env" <<EOF
LDAP_ADMIN_PASSWORD=$(password 18)
POSTGRES_PASSWORD=$db
DB_PASSWORD=$db
REDIS_PASSWORD=$redis
REDIS_CACHE_PASSWORD=$redis
SECRET_KEY=$(password 48)
API_TOKEN_PEPPER_1=$(password 48)
SUPERUSER_PASSWORD=$(password 18)
EOF
fi
