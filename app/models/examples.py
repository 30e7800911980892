"""Request-body examples for the OpenAPI document, so "Try it out" on /docs starts from a request
that makes sense (Chinese and English values where a sales team in either would type them).

Each schema refers to its example with `json_schema_extra=examples(X)`; a test validates every
example against its model, so an example cannot drift from the schema it illustrates, and
sends the examples that need no id to their endpoints in a fresh organisation. Ids in the
others are placeholders: replace them with ids from your own organisation.
"""

from __future__ import annotations

from typing import Any

from pydantic.config import JsonDict

USER_ID = "5f0c6a3e-8d1b-4c53-9a51-2f8e0c7b6d41"
DEAL_ID = "6a8c0e2f-4b6d-4f8a-a1c3-5e7a9c1e3b5d"
LEAD_ID = "9d1f3b5a-7c9e-4b1d-8f3a-2c4e6a8c0e4f"
STAGE_ID = "2e4a6c8e-0b2d-4f6a-9c1e-3a5c7e9b1d6f"
OTHER_STAGE_ID = "1a3c5e7b-9d1f-4c3e-a5b7-8d0f2b4d6f9c"


def examples(*values: dict[str, Any]) -> JsonDict:
    """`json_schema_extra` carrying these request examples."""
    return {"examples": list(values)}


TOKEN_REQUEST = {"email": "admin@example.com", "password": "correct horse battery staple"}

ORGANISATION_UPDATE = {
    "name": "上海漏斗科技 Loudou Shanghai",
    "settings": {
        "country": "CN",
        "base_currency": "CNY",
        "timezone": "Asia/Shanghai",
        "default_phone_country": "CN",
        "seller": {
            "legal_name": "上海漏斗科技有限公司",
            "address": "上海市浦东新区世纪大道 100 号\n200120 Shanghai, China",
            "tax_id": "91310115MA1K4XXXX7",
            "phone": "+86 21 5555 0100",
            "email": "sales@example.com",
        },
    },
}

USER_CREATE = {
    "email": "li.na@example.com",
    "name": "李娜 Li Na",
    "role": "rep",
    "timezone": "Asia/Shanghai",
    "capacity": 40,
    "working_hours": {d: ["09:00", "18:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
}
USER_UPDATE = {"name": "李娜 Li Na", "capacity": 60, "timezone": "Asia/Shanghai"}
PASSWORD_CHANGE = {"current_password": "correct horse battery staple", "new_password": "a longer one, 2026"}
TEAM_CREATE = {"name": "华东销售 East China sales"}
TEAM_UPDATE = {"name": "华东销售一组 East China sales 1", "manager_id": USER_ID, "member_ids": [USER_ID]}
API_KEY_CREATE = {"name": "Metabase (read-only)", "scopes": ["read", "metrics:read"]}

LEAD_CREATE = {
    "name": "王伟 Wang Wei",
    "email": "wang.wei@example.cn",
    "phone": "138 0013 8000",
    "country": "CN",
    "company": "上海示例贸易有限公司",
    "title": "采购经理 Purchasing manager",
    "industry": "manufacturing",
    "message": "想了解 ERP 实施报价。Looking for an ERP rollout quote.",
    "tags": ["trade-show-2026"],
    "attributes": {"employees": 250},
}
LEAD_UPDATE = {"title": "采购总监 Head of purchasing", "status": "working", "tags": ["hot"]}
LEAD_ASSIGN = {"owner_id": USER_ID}
LEAD_REASON = {"reason": "No budget this year 今年无预算"}
LEAD_MERGE = {"duplicate_id": LEAD_ID}
ACTIVITY_CREATE = {
    "kind": "call",
    "direction": "outbound",
    "subject": "首次电话 First call",
    "body": "Discussed scope; sending a quote on Friday. 周五发报价。",
    "occurred_at": "2026-11-30T09:30:00+08:00",
}
LEAD_CONVERT = {
    "account_name": "上海示例贸易有限公司",
    "deal_name": "ERP 实施 ERP rollout",
    "amount": "150000.00",
    "currency": "CNY",
    "expected_close_date": "2026-12-31",
}
LEAD_IMPORT_MAPPING = {"E-Mail": "email", "姓名": "name", "公司": "company", "电话": "phone"}

ASSIGNMENT_RULE_CREATE = {
    "name": "China, hot leads 中国高分线索",
    "position": 10,
    "conditions": [
        {"field": "country", "op": "in", "value": ["CN", "HK"]},
        {"field": "score", "op": "gte", "value": 50},
    ],
    "target_user_ids": [USER_ID],
    "strategy": "round_robin",
    "respect_working_hours": True,
    "contact_sla": "PT30M",
    "sla_action": "reassign",
}
ASSIGNMENT_RULE_UPDATE = {"strategy": "least_loaded", "contact_sla": "PT1H"}
ASSIGNMENT_PREVIEW = {"lead": {"country": "CN", "score": 80, "source": "web_form"}}

FOLLOWUP_POLICY_CREATE = {
    "name": "New leads: call within the hour 新线索一小时内联系",
    "lead_status": "new",
    "interval": "PT1H",
    "task_subject": "Call the new lead 联系新线索",
}
FOLLOWUP_POLICY_UPDATE = {"interval": "PT2H", "active": True}
TASK_COMPLETE = {"outcome": "Reached; demo booked for Tuesday. 已约周二演示。", "log_as": "call"}

INTAKE_SOURCE_CREATE = {
    "kind": "form",
    "name": "官网表单 Website contact form",
    "field_mapping": {"your-email": "email", "your-name": "name", "org": "company", "tel": "phone"},
    "honeypot_field": "website",
    "allowed_origins": ["https://www.example.com"],
    "default_country": "CN",
    "tags": ["web"],
}
INTAKE_SOURCE_UPDATE = {"field_mapping": {"email": "email", "姓名": "name"}, "rate_limit_per_minute": 300}
SECRET_ROTATION = {"grace_hours": 24}

SCORING_RULE_CREATE = {
    "name": "Manufacturing 制造业",
    "field": "industry",
    "operator": "eq",
    "value": "manufacturing",
    "points": 20,
}
SCORING_RULE_UPDATE = {"points": 30}
WEBHOOK_SUBSCRIPTION_CREATE = {
    "url": "https://hooks.example.com/loudou",
    "description": "CRM sync 同步到内部系统",
    "event_types": ["lead.created", "deal.won"],
    "filter": {"source": "web_form"},
}
WEBHOOK_SUBSCRIPTION_UPDATE = {"event_types": ["deal.won", "quote.accepted"], "active": True}

STAGE_CREATE = {
    "name": "方案演示",
    "name_en": "Demo",
    "probability": "30",
    "kind": "open",
    "required_fields": ["contact_id"],
    "rotting_days": 14,
}
PIPELINE_CREATE = {
    "name": "渠道销售 Channel sales",
    "win_on_quote_acceptance": True,
    "stages": [
        {"name": "初步接触", "name_en": "First contact", "probability": "20"},
        {"name": "报价", "name_en": "Quote", "probability": "60", "required_fields": ["amount"]},
        {"name": "成交", "name_en": "Won", "probability": "100", "kind": "won"},
        {"name": "输单", "name_en": "Lost", "probability": "0", "kind": "lost"},
    ],
}
PIPELINE_UPDATE = {"name": "渠道销售 Channel sales (2026)", "win_on_quote_acceptance": False}
STAGE_UPDATE = {"probability": "35", "rotting_days": 10}
STAGE_ORDER = {"stage_ids": [STAGE_ID, OTHER_STAGE_ID]}

ACCOUNT_CREATE = {
    "name": "上海示例贸易有限公司",
    "domain": "example.cn",
    "industry": "manufacturing",
    "country": "CN",
    "phone": "+86 21 5555 0199",
    "address": "上海市静安区南京西路 1 号",
    "credit_limit": "500000.00",
    "credit_currency": "CNY",
    "credit_rating": "A",
}
ACCOUNT_UPDATE = {"credit_limit": "800000.00", "credit_rating": "AA"}
CONTACT_CREATE = {
    "name": "王伟",
    "email": "wang.wei@example.cn",
    "phone": "+86 138 0013 8000",
    "title": "采购经理 Purchasing manager",
}
CONTACT_UPDATE = {"title": "采购总监 Head of purchasing"}

DEAL_CREATE = {
    "name": "ERP 实施 ERP rollout",
    "amount": "150000.00",
    "currency": "CNY",
    "expected_close_date": "2026-12-31",
}
DEAL_UPDATE = {"amount": "180000.00", "expected_close_date": "2027-01-31"}
DEAL_MOVE = {"stage_id": STAGE_ID}
DEAL_LOST = {"reason": "competitor", "note": "Chose a local vendor 选择了本地供应商"}
DEAL_REOPEN = {"stage_id": STAGE_ID}

PRODUCT_CREATE = {
    "sku": "ERP-IMPL-DAY",
    "name": "实施服务（人天） Implementation, per day",
    "unit_price": "3800.00",
    "currency": "CNY",
    "tax_rate": "6",
}
PRODUCT_UPDATE = {"unit_price": "4200.00"}

QUOTE_LINES = [
    {
        "description": "实施服务（人天） Implementation days",
        "quantity": "20",
        "unit_price": "3800.00",
        "tax_rate": "6",
    },
    {
        "description": "软件许可 Software licence, 50 users",
        "quantity": "1",
        "unit_price": "98000.00",
        "tax_rate": "13",
    },
    {
        "description": "Travel 差旅",
        "quantity": "1",
        "unit_price": "5000.00",
        "tax_rate": "6",
        "discount_percent": "10",
    },
]
QUOTE_CREATE = {
    "deal_id": DEAL_ID,
    "valid_until": "2026-12-31",
    "discount_percent": "5",
    "payment_terms": [{"percent": "30", "due": "on_acceptance"}, {"percent": "70", "due_days": 30}],
    "notes": "交付周期 6 周。Delivery within 6 weeks of signature.",
    "lines": QUOTE_LINES,
}
QUOTE_UPDATE = {"valid_until": "2027-01-15", "discount_percent": "8"}
QUOTE_REASON = {"reason": "Budget moved to next year 预算推迟到明年"}

# Collections (回款): orders without a quote, payments, installments, dunning.
ACCOUNT_ID = "8e2a4c6f-1b3d-4f5a-9c7e-0d2b4a6c8e1f"
INSTALLMENT_ID = "3d5f7b9a-1c3e-4d5f-a7b9-2c4e6a8b0d1f"
QUOTE_ACCEPT = {"credit_override_reason": "CFO approved the overdue balance 财务总监已批准"}
ORDER_CREATE = {
    "account_id": ACCOUNT_ID,
    "currency": "CNY",
    "lines": [
        {
            "description": "年度维护 Annual maintenance",
            "quantity": "1",
            "unit_price": "36000.00",
            "tax_rate": "6",
        }
    ],
    "payment_terms": [{"percent": "50", "due_days": 0}, {"percent": "50", "due_days": 90}],
}
ORDER_CANCEL = {"reason": "Customer withdrew 客户撤单", "effective_on": "2026-12-15"}
INSTALLMENT_RESCHEDULE = {
    "parts": [
        {"amount": "20000.00", "due_date": "2027-01-15"},
        {"amount": "20000.00", "due_date": "2027-02-15"},
    ],
    "reason": "Split at the customer's request 应客户要求分两期",
}
PROMISE_CREATE = {
    "date": "2026-12-20",
    "amount": "20000.00",
    "note": "王经理承诺月底前付款 Promised by Mr Wang",
}
PAYMENT_CREATE = {
    "account_id": ACCOUNT_ID,
    "amount": "57390.00",
    "currency": "CNY",
    "received_at": "2026-12-01",
    "method": "bank_transfer",
    "reference": "招商银行 CMB 20261201-0042",
}
PAYMENT_REASON = {"reason": "Not on the bank statement 银行流水未见"}
PAYMENT_REVERSE = {"reason": "Bounced 退票", "reversed_on": "2026-12-05"}
CREDIT_APPLY = {"currency": "CNY", "allocations": [{"installment_id": INSTALLMENT_ID, "amount": "5000.00"}]}
DUNNING_POLICY_CREATE = {
    "name": "Standard 标准催款",
    "is_default": True,
    "steps": [
        {"offset_days": -3, "action": "email", "language": "zh"},
        {"offset_days": 1, "action": "email", "language": "en"},
        {"offset_days": 15, "action": "owner_task"},
        {"offset_days": 30, "action": "manager_task"},
        {"offset_days": 60, "action": "legal_notice"},
    ],
}
DUNNING_POLICY_UPDATE = {"name": "Standard 标准催款 (2027)", "active": True}

# Sales targets (销售目标) and dated exchange rates, for the metrics.
SALES_TARGET_CREATE = {
    "user_id": USER_ID,
    "period": "quarter",
    "period_start": "2027-01-01",
    "amount": "1200000.00",
    "currency": "CNY",
    "count": 12,
}

SALES_TARGET_UPDATE = {"amount": "1500000.00", "count": 15}

EXCHANGE_RATE_CREATE = {"date": "2026-11-30", "from": "USD", "to": "CNY", "rate": "7.1234"}
