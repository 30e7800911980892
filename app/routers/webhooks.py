"""Outbound webhook subscriptions and their delivery log."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response, status

from app.deps import IfMatchDep, PageDep, SessionDep, SettingsDep, require
from app.errors import problem_responses
from app.models.webhook import (
    WebhookAttempt,
    WebhookAttemptRead,
    WebhookDelivery,
    WebhookDeliveryRead,
    WebhookSubscription,
    WebhookSubscriptionCreate,
    WebhookSubscriptionRead,
    WebhookSubscriptionUpdate,
    WebhookSubscriptionWithSecret,
)
from app.pagination import Page
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services import webhooks as service
from app.services.webhook_targets import TargetPolicy

router = APIRouter(prefix="/v1/webhook-subscriptions", tags=["webhooks"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("webhooks:read"))]
Writer = Annotated[Principal, Depends(require("webhooks:write"))]


def _with_secret(sub: WebhookSubscription) -> WebhookSubscriptionWithSecret:
    return WebhookSubscriptionWithSecret.model_validate(sub.model_dump())


def _delivery(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> WebhookDeliveryRead:
    return WebhookDeliveryRead.model_validate(
        {
            **delivery.model_dump(),
            "attempt_log": [WebhookAttemptRead.model_validate(a.model_dump()) for a in attempts],
        }
    )


@router.post(
    "",
    response_model=WebhookSubscriptionWithSecret,
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe a URL to events",
    responses=problem_responses(422),
)
async def create_subscription(
    body: WebhookSubscriptionCreate,
    principal: Writer,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> WebhookSubscriptionWithSecret:
    """Admins subscribe; the `secret` (whsec_…) is shown in this response only. The URL must
    reach a public address (422 `url_not_allowed` otherwise)."""
    sub = await service.create_subscription(
        session, principal, body, policy=TargetPolicy.from_settings(settings)
    )
    set_etag(response, sub)
    response.headers["Cache-Control"] = "no-store"
    return _with_secret(sub)


@router.get("", response_model=Page[WebhookSubscriptionRead], summary="List subscriptions")
async def list_subscriptions(
    principal: Reader, session: SessionDep, page: PageDep
) -> Page[WebhookSubscriptionRead]:
    """The organisation's subscriptions (admins)."""
    rows, next_cursor = await service.list_subscriptions(session, principal, page)
    return Page(
        data=[WebhookSubscriptionRead.model_validate(r.model_dump()) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/{sub_id}",
    response_model=WebhookSubscriptionRead,
    summary="Get a subscription",
    responses=problem_responses(404),
)
async def get_subscription(
    sub_id: uuid.UUID, principal: Reader, session: SessionDep, response: Response
) -> WebhookSubscriptionRead:
    """One subscription, without its secret."""
    sub = await service.get_subscription(session, principal, sub_id)
    set_etag(response, sub)
    return WebhookSubscriptionRead.model_validate(sub.model_dump())


@router.patch(
    "/{sub_id}",
    response_model=WebhookSubscriptionRead,
    summary="Change a subscription",
    responses=problem_responses(404, 412, 422),
)
async def update_subscription(
    sub_id: uuid.UUID,
    body: WebhookSubscriptionUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    settings: SettingsDep,
    response: Response,
) -> WebhookSubscriptionRead:
    """URL, event types, filter; `active: true` re-enables a subscription a 410 disabled."""
    sub = await service.update_subscription(
        session,
        principal,
        sub_id,
        body,
        expected_version=version,
        policy=TargetPolicy.from_settings(settings),
    )
    set_etag(response, sub)
    return WebhookSubscriptionRead.model_validate(sub.model_dump())


@router.delete(
    "/{sub_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a subscription",
    responses=problem_responses(404, 412),
)
async def delete_subscription(
    sub_id: uuid.UUID, principal: Writer, session: SessionDep, version: IfMatchDep
) -> Response:
    """Stops deliveries and drops the delivery log."""
    await service.delete_subscription(session, principal, sub_id, expected_version=version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{sub_id}/rotate-secret",
    response_model=WebhookSubscriptionWithSecret,
    summary="Rotate the signing secret",
    responses=problem_responses(404),
)
async def rotate_secret(
    sub_id: uuid.UUID, principal: Writer, session: SessionDep, response: Response
) -> WebhookSubscriptionWithSecret:
    """A new secret, shown once; for 24 h each delivery is signed with the old and the new one."""
    response.headers["Cache-Control"] = "no-store"
    return _with_secret(await service.rotate_secret(session, principal, sub_id))


@router.get(
    "/{sub_id}/deliveries",
    response_model=Page[WebhookDeliveryRead],
    summary="Delivery log",
    responses=problem_responses(404),
)
async def list_deliveries(
    sub_id: uuid.UUID,
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    status: Annotated[
        Literal["pending", "in_flight", "retrying", "succeeded", "failed"] | None, Query()
    ] = None,
) -> Page[WebhookDeliveryRead]:
    """Every delivery with every attempt (status code, response excerpt, duration)."""
    rows, next_cursor = await service.list_deliveries(session, principal, sub_id, page, status=status)
    return Page(data=[_delivery(d, a) for d, a in rows], next_cursor=next_cursor)


@router.post(
    "/{sub_id}/deliveries/{delivery_id}/replay",
    response_model=WebhookDeliveryRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a delivery again",
    responses=problem_responses(404),
)
async def replay_delivery(
    sub_id: uuid.UUID, delivery_id: uuid.UUID, principal: Writer, session: SessionDep
) -> WebhookDeliveryRead:
    """Queues the same delivery (same webhook-id and body) for another try."""
    delivery, attempts = await service.replay_delivery(session, principal, sub_id, delivery_id)
    return _delivery(delivery, attempts)
