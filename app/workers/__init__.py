"""arq worker: settings, jobs (thin: open a session, call a service), cron, the outbox relay."""

from app.workers.settings import WorkerSettings

__all__ = ["WorkerSettings"]
