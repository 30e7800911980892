"""SQLModel tables and their API schemas, one domain per module. Importing this registers every table."""

from app.db import seal_tenant_marker
from app.models.account import Account, Contact
from app.models.api_key import ApiKey
from app.models.audit import AuditEntry
from app.models.deal import Deal, DealFieldHistory, DealStageHistory
from app.models.idempotency import IdempotencyRecord
from app.models.organisation import Organisation
from app.models.outbox import JobRun, OutboxEvent
from app.models.pipeline import Pipeline, Stage
from app.models.product import Product
from app.models.quote import DocumentCounter, Quote
from app.models.receivable import Installment, Order
from app.models.user import Team, User
from app.models.webhook import WebhookAttempt, WebhookDelivery, WebhookSubscription

seal_tenant_marker()

__all__ = [
    "Account",
    "ApiKey",
    "AuditEntry",
    "Contact",
    "Deal",
    "DealFieldHistory",
    "DealStageHistory",
    "DocumentCounter",
    "IdempotencyRecord",
    "Installment",
    "JobRun",
    "Order",
    "Organisation",
    "OutboxEvent",
    "Pipeline",
    "Product",
    "Quote",
    "Stage",
    "Team",
    "User",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookSubscription",
]
