"""A verified caller: the claims of a token whose signature and rules checked out.

Policy code takes an `Identity`, never a raw mapping, so it cannot be handed
claims that were not verified. Only `verify` builds one from a token; the
`explain` dry run builds one from a claims file the operator supplies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Identity:
    issuer: str
    claims: Mapping[str, Any]

    def text(self, claim: str) -> str | None:
        """A string claim, or None when absent or of another type."""
        value = self.claims.get(claim)
        return value if isinstance(value, str) else None

    def __repr__(self) -> str:
        return f"Identity(issuer={self.issuer!r}, sub={self.text('sub')!r})"
