"""Business rules, one module per domain. Services flush, never commit; they raise domain errors."""
