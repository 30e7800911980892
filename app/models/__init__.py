"""SQLModel tables and their API schemas, one domain per module. Importing this registers every table."""

from app.db import seal_tenant_marker
from app.models.account import Account, Contact
from app.models.api_key import ApiKey
from app.models.assignment import AssignmentCursor, AssignmentDecision, AssignmentRule
from app.models.audit import AuditEntry
from app.models.deal import Deal, DealFieldHistory, DealStageHistory
from app.models.dunning import DunningLog, DunningPolicy, DunningStep, OutboundMessage, ReceivableRisk
from app.models.export import DeletedRow
from app.models.followup import FollowupPolicy
from app.models.idempotency import IdempotencyRecord
from app.models.intake import InboundEvent, IntakeSource
from app.models.lead import Activity, Lead
from app.models.metrics import (
    DealClosedRollup,
    DealFunnelDay,
    DealFunnelFacts,
    DealOpenRollup,
    DealStageStay,
    ExchangeRate,
    ImportRecord,
    LeadFunnelFacts,
    PipelineSnapshot,
    PipelineSnapshotDay,
    SalesTarget,
)
from app.models.organisation import Organisation, OrganisationLogo
from app.models.outbox import JobRun, OutboxEvent
from app.models.payment import Payment, PaymentAllocation
from app.models.pipeline import Pipeline, Stage
from app.models.product import Product
from app.models.quote import DocumentCounter, Quote
from app.models.receivable import Installment, Order
from app.models.scoring import ScoringRule
from app.models.user import Team, User
from app.models.webhook import WebhookAttempt, WebhookDelivery, WebhookSubscription

seal_tenant_marker()

__all__ = [
    "Account",
    "Activity",
    "ApiKey",
    "AssignmentCursor",
    "AssignmentDecision",
    "AssignmentRule",
    "AuditEntry",
    "Contact",
    "Deal",
    "DealClosedRollup",
    "DealFieldHistory",
    "DealFunnelDay",
    "DealFunnelFacts",
    "DealOpenRollup",
    "DealStageHistory",
    "DealStageStay",
    "DeletedRow",
    "DocumentCounter",
    "DunningLog",
    "DunningPolicy",
    "DunningStep",
    "ExchangeRate",
    "FollowupPolicy",
    "IdempotencyRecord",
    "ImportRecord",
    "InboundEvent",
    "Installment",
    "IntakeSource",
    "JobRun",
    "Lead",
    "LeadFunnelFacts",
    "Order",
    "Organisation",
    "OrganisationLogo",
    "OutboundMessage",
    "OutboxEvent",
    "Payment",
    "PaymentAllocation",
    "Pipeline",
    "PipelineSnapshot",
    "PipelineSnapshotDay",
    "Product",
    "Quote",
    "ReceivableRisk",
    "SalesTarget",
    "ScoringRule",
    "Stage",
    "Team",
    "User",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookSubscription",
]
