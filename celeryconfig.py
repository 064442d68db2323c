"""Celery settings, and only Celery settings; the product's own live in novahooks.settings.

Each choice here answers a known way to lose or repeat work:
late acks + reject on worker loss + prefetch 1 give at-least-once delivery
(a SIGKILLed worker's task goes back to the queue); the visibility timeout is
kept above the longest task including its retry countdowns, in broker and
result transport alike (celery #2599, #3270); JSON only, pickle refused;
results are ignored because nobody reads them (celery #7801); every producer
has connect timeouts and a bounded retry policy so a dead broker cannot hang
the relay (celery #4296).
"""

from kombu import Queue

from novahooks.settings import load_settings

STEPS = ("ipam", "dns", "ldap", "inventory", "audit")

_settings = load_settings()

broker_url = _settings.broker.url
broker_connection_timeout = _settings.broker.connect_timeout
broker_connection_retry_on_startup = True
broker_transport_options = {
    "visibility_timeout": _settings.broker.visibility_timeout,
    "socket_timeout": _settings.broker.connect_timeout,
    "socket_connect_timeout": _settings.broker.connect_timeout,
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

task_queues = [Queue(step, routing_key=step) for step in STEPS]
task_default_queue = "audit"
task_routes = {"%s.*" % step: {"queue": step, "routing_key": step} for step in STEPS}
task_publish_retry = True
task_publish_retry_policy = {"max_retries": 3, "interval_start": 0.2,
                             "interval_step": 0.5, "interval_max": 2.0}

worker_send_task_events = True
task_send_sent_event = True
worker_hijack_root_logger = False

imports = tuple("tasks.%s" % step for step in STEPS)
