"""The static-secret exchange: a named secret's fields, after the policy said yes.

Authorisation happens before this lookup, and a missing secret or field is
answered exactly like a denial, so names cannot be probed.
"""

from __future__ import annotations

from collections.abc import Mapping

from exchanger.config.model import Secret
from exchanger.errors import AccessDenied
from exchanger.policy.asks import SecretRequest


def reveal(secrets: Mapping[str, Mapping[str, Secret]], request: SecretRequest) -> dict[str, str]:
    """The requested fields (one, or all) as plain values; AccessDenied when unknown."""
    fields = secrets.get(request.name)
    if fields is None:
        raise AccessDenied()
    if request.field is None:
        return {name: secret.value for name, secret in fields.items()}
    secret = fields.get(request.field)
    if secret is None:
        raise AccessDenied()
    return {request.field: secret.value}
