"""The JSON Schema of the config file, printed by `exchanger schema`.

Editors and CI can validate configs with it; the loader in `config` enforces
the same rules (and more: sources resolve, patterns compile) with FILE:LINE
errors. A test keeps the example config valid against this schema.
"""

from __future__ import annotations

from typing import Any

from exchanger.config.model import SIGNING_ALGORITHMS
from exchanger.policy.asks import RUNNER_ACTIONS
from exchanger.policy.permissions import PERMISSIONS

_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
_SCALAR = {"type": ["string", "integer", "boolean"]}

_SOURCE = {
    "type": "object",
    "description": "A secret value: inline, from an environment variable, or from a file",
    "oneOf": [
        {"required": ["value"], "properties": {"value": {"type": "string"}}},
        {"required": ["env"], "properties": {"env": {"type": "string", "minLength": 1}}},
        {"required": ["file"], "properties": {"file": {"type": "string", "minLength": 1}}},
    ],
    "additionalProperties": False,
    "properties": {"value": {}, "env": {}, "file": {}},
}

_PERMISSIONS = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {name: {"enum": list(levels)} for name, levels in PERMISSIONS.items()},
}

_BUCKET = {
    "per_minute": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000000},
    "burst": {"type": "integer", "minimum": 1, "maximum": 1000000},
}

_POLICY = {
    "type": "object",
    "required": ["name", "claims"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "effect": {"enum": ["allow", "deny"], "default": "allow"},
        "single_use": {
            "type": "boolean",
            "default": False,
            "description": "each (iss, jti) may be exchanged once, until the token expires",
        },
        "rate_limit": {
            "type": "object",
            "required": ["per_minute", "burst"],
            "additionalProperties": False,
            "properties": _BUCKET,
        },
        "claims": {
            "type": "object",
            "minProperties": 1,
            "description": "claim → pattern or list of patterns; 'match:' prefixes an RE2 "
            "expression that must match the whole value",
            "additionalProperties": {
                "oneOf": [_SCALAR, {"type": "array", "items": _SCALAR, "minItems": 1}]
            },
        },
        "grants": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "secrets": _STRINGS,
                "runner": {
                    "type": "object",
                    "required": ["scopes"],
                    "additionalProperties": False,
                    "properties": {
                        "scopes": _STRINGS,
                        "actions": {
                            "type": "array",
                            "items": {"enum": list(RUNNER_ACTIONS)},
                            "minItems": 1,
                        },
                        "runner_groups": _STRINGS,
                        "labels": {**_STRINGS, "maxItems": 100},
                    },
                },
                "installation": {
                    "type": "object",
                    "required": ["repositories", "permissions"],
                    "additionalProperties": False,
                    "properties": {
                        "owner": {"type": "string", "minLength": 1},
                        "repositories": {"oneOf": [{"const": "*"}, {**_STRINGS, "maxItems": 500}]},
                        "permissions": _PERMISSIONS,
                    },
                },
            },
        },
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "exchanger configuration",
    "type": "object",
    "required": ["issuers"],
    "additionalProperties": False,
    "properties": {
        "server": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_body_bytes": {"type": "integer", "minimum": 1024, "maximum": 16777216}
            },
        },
        "issuers": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["issuer", "audiences"],
                "additionalProperties": False,
                "properties": {
                    "issuer": {"type": "string", "pattern": "^https://"},
                    "audiences": _STRINGS,
                    "jwks_uri": {"type": "string", "pattern": "^https://"},
                    "algorithms": {
                        "type": "array",
                        "items": {"enum": sorted(SIGNING_ALGORITHMS)},
                        "minItems": 1,
                        "default": ["RS256"],
                    },
                    "leeway_seconds": {"type": "integer", "minimum": 0, "maximum": 300},
                    "max_lifetime_seconds": {"type": "integer", "minimum": 1},
                    "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
                },
            },
        },
        "github": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "api_url": {"type": "string", "pattern": "^https://"},
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 120},
                "app": {
                    "type": "object",
                    "required": ["id", "private_key"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "integer", "minimum": 1},
                        "private_key": _SOURCE,
                        "installation_id": {"type": "integer", "minimum": 1},
                    },
                },
                "token": _SOURCE,
            },
        },
        "runner_scopes": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"allow": _STRINGS, "deny": _STRINGS},
        },
        "secrets": {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z0-9._-]{1,128}$"},
            "additionalProperties": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": "^[A-Za-z0-9._-]{1,128}$"},
                "additionalProperties": _SOURCE,
            },
        },
        "policies": {"type": "array", "items": _POLICY},
        "policy_files": _STRINGS,
        "rate_limit": {
            "type": "object",
            "required": ["per_minute", "burst"],
            "additionalProperties": False,
            "properties": {**_BUCKET, "key": {"type": "string", "minLength": 1}},
        },
        "state": {
            "type": "object",
            "required": ["redis_url"],
            "additionalProperties": False,
            "properties": {
                "redis_url": {
                    "oneOf": [
                        {"type": "string", "pattern": "^(redis|rediss|unix)://"},
                        _SOURCE,
                    ]
                }
            },
        },
    },
    "$defs": {"policy": _POLICY},
}
