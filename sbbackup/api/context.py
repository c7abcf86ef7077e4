"""One request as the handlers see it: its parsed parts, its ops context (which audits under
the token's label), and the response they return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import ops
from .wire import Query


@dataclass
class ApiContext(ops.Context):
    """An ops context whose audit lines also name the API token that asked, and carry
    ``audit_extra`` (``encryption: off`` for a backup the API was allowed to weaken)."""

    token_label: str | None = None
    audit_extra: dict[str, Any] = field(default_factory=dict)

    def audit(self, operation: str, target_id: str | None, result: str, **extra: Any) -> None:
        extra = {**self.audit_extra, **extra}
        if self.token_label:
            extra["token"] = self.token_label
        super().audit(operation, target_id, result, **extra)


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]  # path parameters, percent-decoded, not yet validated
    query: Query
    body: dict[str, Any]
    ctx: ApiContext
    wait: bool = False


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
