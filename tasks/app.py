"""The Celery application shared by the workers and the relay."""

from celery import Celery

app = Celery("novahooks")
app.config_from_object("celeryconfig")
