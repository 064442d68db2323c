# One image for everything that runs outside Nova: the Celery workers (one container
# per queue), Flower, the relay and the `novahooks` CLI. The hook side is not in it:
# it is installed into Nova's own environment on the Nova hosts (see README.md).
#
# Build:   docker build -t novahooks .          (or: docker compose build)
#
# There is no ENTRYPOINT, so a container runs exactly the command it is given:
#   worker   celery -A tasks.app worker -Q ipam -c 2 -n ipam@%h -E --loglevel=INFO
#   Flower   celery -A tasks.app flower --address=0.0.0.0 --port=5555   (FLOWER_BASIC_AUTH set)
#   relay    novahooks relay
#   CLI      novahooks check | status | dead-letters ... | reconcile | simulate ... | audit verify FILE
# The default CMD prints the CLI's help.
#
# Configuration comes at run time, never at build time: mount the INI file at
# /etc/novahooks/novahooks.conf (or point NOVAHOOKS_CONFIG at it) and pass secrets as
# NOVAHOOKS_<SECTION>_<KEY> or NOVAHOOKS_<SECTION>_<KEY>_FILE (docker-compose.yml uses
# env files under deploy/, which .dockerignore keeps out of the build context).

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Only what the package needs (.dockerignore lets nothing else into the context).
COPY pyproject.toml README.md celeryconfig.py /usr/src/novahooks/
COPY worker/pyproject.toml /usr/src/novahooks/worker/pyproject.toml
COPY novahooks /usr/src/novahooks/novahooks
COPY tasks /usr/src/novahooks/tasks
RUN cd /usr/src/novahooks \
    && pip install . ./worker \
    && cd / && rm -rf /usr/src/novahooks

COPY --chmod=0755 deploy/healthcheck.py /usr/local/bin/novahooks-healthcheck

# A fixed, non-root uid/gid, so volumes can be prepared for it; the directories below
# are copied into fresh named volumes with this ownership.
RUN groupadd --system --gid 10001 novahooks \
    && useradd --system --uid 10001 --gid novahooks --home-dir /var/lib/novahooks \
        --no-create-home --shell /usr/sbin/nologin novahooks \
    && install -d -o novahooks -g novahooks -m 0750 \
        /var/lib/novahooks /var/lib/novahooks/data /var/lib/novahooks/outbox \
    && install -d -m 0755 /etc/novahooks

USER 10001:10001
WORKDIR /var/lib/novahooks

# Worker: its main process holds a connection to the broker; relay: its heartbeat in the
# outbox is fresh; Flower: /healthcheck answers; a one-off CLI container: always healthy.
# (`celery -A tasks.app inspect ping -d <queue>@$HOSTNAME` checks a worker more deeply but
# costs a Celery start-up and a broker broadcast per interval.)
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["novahooks-healthcheck"]

CMD ["novahooks", "--help"]
