"""Request bodies: one base refuses unknown fields, one PATCH base refuses nulls where the column
has none, and every such refusal has the same shape."""

from __future__ import annotations

import pydantic
import pytest

from app.errors import ValidationFailed
from app.models.common import Input, Patch
from app.models.lead import Lead, LeadCreate, LeadFields, LeadUpdate
from app.models.product import ProductUpdate
from app.models.user import TeamUpdate
from tests.conftest import Org


def test_every_patch_body_refuses_unknown_fields_and_nulls_for_not_null_columns() -> None:
    with pytest.raises(pydantic.ValidationError):
        LeadCreate.model_validate({"email": "a@example.com", "colour": "red"})
    assert issubclass(LeadUpdate, Patch) and issubclass(LeadCreate, Input)
    assert LeadUpdate.model_validate({"email": None}).changes() == {"email": None}
    for body, field in ((LeadUpdate(status=None), "status"), (ProductUpdate(name=None), "name")):
        with pytest.raises(ValidationFailed) as caught:
            body.changes()
        assert caught.value.detail == f"{field} may not be null"
        assert [(e.field, e.code) for e in caught.value.errors or []] == [(field, "null")]


def test_lead_fields_are_one_definition_for_the_table_and_the_bodies() -> None:
    for name in LeadFields.model_fields:
        assert name in LeadCreate.model_fields and name in LeadUpdate.model_fields
        assert name in Lead.__table__.columns  # type: ignore[attr-defined]
    # What a body accepts, the column holds.
    assert Lead.__table__.c.phone.type.length == 64  # type: ignore[attr-defined]
    for name in ("name", "email", "phone", "company", "title", "industry"):
        limit = next(m.max_length for m in LeadFields.model_fields[name].metadata if hasattr(m, "max_length"))
        assert Lead.__table__.c[name].type.length == limit  # type: ignore[attr-defined]


async def test_a_null_for_a_not_null_field_is_the_same_422_everywhere(org: Org) -> None:
    r = await org.client.post("/v1/teams", json={"name": "North"}, headers=org.auth())
    assert r.status_code == 201, r.text
    r = await org.client.patch(f"/v1/teams/{r.json()['id']}", json={"name": None}, headers=org.auth())
    assert r.status_code == 422
    assert r.json()["detail"] == "name may not be null"
    assert r.json()["errors"] == [{"field": "name", "code": "null", "message": "name may not be null"}]
    assert TeamUpdate.not_null == ("name",)
