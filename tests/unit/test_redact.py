"""redact_secrets: whatever a message quotes, a credential never goes out (pure unit test)."""

from __future__ import annotations

import pytest

from sbbackup.errors import DatabaseError, redact_secrets

CASES = [
    ("host=a Password=abc dbname=x", "host=a Password=*** dbname=x"),
    ("PASSWORD = 'a b\\' c' x", "PASSWORD = *** x"),
    ("postgresql://u:p%40ss@h/db?password=zz", "postgresql://u:***@h/db?password=***"),
    ("postgresql://u:pa@ss@h/db", "postgresql://u:***@h/db"),
    ('{"password": "abc", "x": 1}', '{"password": "***", "x": 1}'),
    ("Authorization: Bearer abc123", "Authorization: Bearer ***"),
    ("postgresql://u@h:5/db is fine", "postgresql://u@h:5/db is fine"),
    ("see http://example.com:80/x", "see http://example.com:80/x"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_redact_secrets(text: str, expected: str) -> None:
    assert redact_secrets(text) == expected


def test_every_error_message_is_redacted() -> None:
    exc = DatabaseError("cannot connect to postgresql://app:hunter2@db/x: password=hunter2")
    assert "hunter2" not in exc.message and "hunter2" not in str(exc)
