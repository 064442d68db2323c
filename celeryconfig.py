"""Celery settings, and only Celery settings; the product's own live in novahooks.settings.

Each choice here answers a known way to lose or repeat work:
late acks + reject on worker loss + prefetch 1 give at-least-once delivery
(a SIGKILLed worker's task goes back to the queue); the visibility timeout is
kept above the longest task including its retry countdowns, in broker and
result transport alike (celery #2599, #3270); JSON only, pickle refused;
results are ignored because nobody reads them (celery #7801); every producer
has connect timeouts and a bounded retry policy so a dead broker cannot hang
the relay (celery #4296).

With a RabbitMQ broker (``amqp://`` / ``pyamqp://``) the step queues are
durable quorum queues (replicated, and they count deliveries): a message that
keeps killing its worker (each kill requeues it: reject on worker loss) is
dead-lettered to ``novahooks.dead`` after DELIVERY_LIMIT returns instead of
looping forever (a backstop above the steps' own poison check, which parks a
message there only once it is shown to kill its worker), and a message a worker
rejects outright (undecodable, unknown task) is parked there too. Publisher
confirms make the relay delete an outbox event only once RabbitMQ has really
taken the chain. Quorum queues refuse global QoS, so Celery (>= 5.5,
worker_detect_quorum_queues) switches to per-consumer prefetch, which it can no
longer raise while it holds a countdown/ETA task (celery #6067); retries with
backoff therefore go through Celery's native delayed delivery (celery_delayed_*
queues), which needs the step queues bound to a topic exchange, never a direct
one. The Redis path is unchanged.
"""

from kombu import Exchange, Queue

from novahooks.settings import load_settings

STEPS = ("ipam", "dns", "ldap", "inventory", "audit")

_settings = load_settings()

broker_url = _settings.broker.connection_url()
broker_connection_timeout = _settings.broker.connect_timeout
broker_connection_retry_on_startup = True
# Workers keep reconnecting however long the broker is away (Celery's default gives up
# after 100 attempts, under an hour).
broker_connection_max_retries = None
AMQP = broker_url.split("://", 1)[0].lower() in ("amqp", "amqps", "pyamqp")
if broker_url.split("://", 1)[0].lower() in ("redis", "rediss"):
    # kombu's Redis transport, but an undecodable queue entry is moved aside instead
    # of ending the worker pool (celery #7975, #4308)
    broker_transport = "tasks.transport:Transport"
# Every message Celery cannot use is counted (tasks/signing.py); each task's strategy
# refuses unsigned, forged and oversized ones before anything runs.
worker_consumer = "tasks.signing:Consumer"
if not AMQP:
    from tasks.transport import sweep_options  # kombu's Redis transport: not for RabbitMQ
    broker_transport_options = {
        "visibility_timeout": _settings.broker.visibility_timeout,
        **sweep_options(_settings.broker.visibility_timeout),
        "socket_timeout": _settings.broker.connect_timeout,
        "socket_connect_timeout": _settings.broker.connect_timeout,
        "max_retries": 3,
    }
else:
    # RabbitMQ redelivers unacked work itself when a consumer goes away, so it has
    # no visibility timeout; confirm_publish makes every basic.publish wait for the
    # broker's ack (a nack or a refused publish raises instead of vanishing).
    broker_transport_options = {
        "confirm_publish": True,
        "max_retries": 3,
    }
result_backend = None
task_ignore_result = True
result_expires = 3600

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

task_acks_late = True
task_reject_on_worker_lost = True
task_acks_on_failure = True
task_acks_on_timeout = True
worker_prefetch_multiplier = 1

if not AMQP:
    task_queues = [Queue(step, routing_key=step) for step in STEPS]
else:
    #: returns (requeues) a message may take before the broker dead-letters it; a
    #: worker restart or a broken connection costs an in-flight message one return.
    #: The steps act first: after [retry] max_deliveries returns they publish the
    #: message again as a probe (a fresh message, whose count starts at 0) and park it
    #: only once it is shown to kill its worker (tasks/middleware.py Deliveries); the
    #: broker's limit stays above theirs, as a backstop that never parks first.
    DELIVERY_LIMIT = _settings.retry.max_deliveries + 2
    DEAD_LETTER = "novahooks.dead"
    TASK_EXCHANGE = Exchange("novahooks", type="topic", durable=True)
    DEAD_LETTER_QUEUE = Queue(DEAD_LETTER, Exchange(DEAD_LETTER, type="fanout", durable=True),
                              routing_key=DEAD_LETTER, durable=True,
                              queue_arguments={"x-queue-type": "quorum"})
    STEP_QUEUE_ARGUMENTS = {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": DEAD_LETTER,
        # at-least-once: the queue keeps a dead message until novahooks.dead has it
        # (RabbitMQ >= 3.10; it requires reject-publish overflow, which only acts
        # if a length limit is ever set).
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }

    class StepQueue(Queue):
        """A step queue whose declaration (by a worker or the relay) declares the
        whole topology: the dead-letter queue, so a parked message always has
        somewhere to go, and every other step queue, because a worker's delayed-
        delivery bootstep binds *all* task_queues, not only those it consumes
        (it fails with 404 NOT_FOUND on any not yet declared, celery 5.7)."""

        def declare(self, nowait=False, channel=None):
            channel = channel or self.channel
            DEAD_LETTER_QUEUE.declare(nowait=nowait, channel=channel)
            for other in task_queues:
                if other.name != self.name:
                    Queue.declare(other, nowait=nowait, channel=channel)
            return super().declare(nowait=nowait, channel=channel)

    task_queues = [StepQueue(step, TASK_EXCHANGE, routing_key=step, durable=True,
                             queue_arguments=dict(STEP_QUEUE_ARGUMENTS)) for step in STEPS]
    task_default_exchange = TASK_EXCHANGE.name
    task_default_exchange_type = "topic"
    task_default_queue_type = "quorum"
    task_create_missing_queue_type = "quorum"
    task_create_missing_queue_exchange_type = "topic"
    # Both are Celery's defaults (5.5+); stated because the design depends on them:
    # per-consumer QoS for quorum queues, and countdowns through the delayed-delivery
    # quorum queues instead of being held in a worker's only prefetch slot.
    worker_detect_quorum_queues = True
    broker_native_delayed_delivery_queue_type = "quorum"
task_default_queue = "audit"
task_routes = {"%s.*" % step: {"queue": step, "routing_key": step} for step in STEPS}
task_publish_retry = True
task_publish_retry_policy = {"max_retries": 3, "interval_start": 0.2,
                             "interval_step": 0.5, "interval_max": 2.0}

worker_send_task_events = True
task_send_sent_event = True
worker_hijack_root_logger = False

imports = tuple("tasks.%s" % step for step in STEPS)
