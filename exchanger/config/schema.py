"""The JSON Schema of the config file, printed by `exchanger schema`.

Editors and CI can validate configs with it; the loader in `config` enforces
the same rules (and more: sources resolve, patterns compile, policies bind an
identity anchor and name only known claims) with FILE:LINE errors. Every
number here comes from the loader's own constants, and a test checks each
limit the loader enforces against this schema, value by value.
"""

from __future__ import annotations

from typing import Any

from exchanger.config.load import (
    ANY_CLAIM,
    GITHUB_TIMEOUT_SECONDS,
    ISSUER_TIMEOUT_SECONDS,
    LEEWAY_SECONDS,
    MAX_LIFETIME_SECONDS,
    SERVER_INTEGERS,
)
from exchanger.config.model import SIGNING_ALGORITHMS
from exchanger.config.policies import BURST_MAX, PER_MINUTE_MAX
from exchanger.policy.asks import MAX_LABELS, MAX_REPOSITORIES, RUNNER_ACTIONS
from exchanger.policy.lint import GITHUB_SHARED_ISSUER
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
    "per_minute": {"type": "number", "exclusiveMinimum": 0, "maximum": PER_MINUTE_MAX},
    "burst": {"type": "integer", "minimum": 1, "maximum": BURST_MAX},
}

_HTTPS = {"type": "string", "pattern": "^https://"}

_UNANCHORED = {
    "type": "object",
    "description": "the explicit opt-out of the identity anchor: the policy matches anyone "
    "this issuer signs for (and only its tokens); the issuer must be configured and must "
    "not be GitHub's shared issuer",
    "required": ["anyone_signed_by"],
    "additionalProperties": False,
    "properties": {
        "anyone_signed_by": {
            **_HTTPS,
            "not": {"enum": [GITHUB_SHARED_ISSUER, GITHUB_SHARED_ISSUER + "/"]},
        }
    },
}

_CLAIM_VOCABULARY = {
    "description": "the claims this issuer sends (default: GitHub's); an entry ending in * "
    "is a prefix; 'any' turns the check off",
    "oneOf": [
        {"const": ANY_CLAIM},
        {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "pattern": "^[^*]+\\*?$"},
        },
    ],
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
        "unanchored": _UNANCHORED,
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
                        "labels": {**_STRINGS, "maxItems": MAX_LABELS},
                    },
                },
                "installation": {
                    "type": "object",
                    "required": ["repositories", "permissions"],
                    "additionalProperties": False,
                    "properties": {
                        "owner": {"type": "string", "minLength": 1},
                        "repositories": {
                            "oneOf": [{"const": "*"}, {**_STRINGS, "maxItems": MAX_REPOSITORIES}]
                        },
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
                name: {"type": "integer", "minimum": low, "maximum": high, "default": default}
                for name, (low, high, default) in SERVER_INTEGERS.items()
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
                    "issuer": _HTTPS,
                    "audiences": _STRINGS,
                    "jwks_uri": _HTTPS,
                    "algorithms": {
                        "type": "array",
                        "items": {"enum": sorted(SIGNING_ALGORITHMS)},
                        "minItems": 1,
                        "default": ["RS256"],
                    },
                    "leeway_seconds": {
                        "type": "integer",
                        "minimum": LEEWAY_SECONDS[0],
                        "maximum": LEEWAY_SECONDS[1],
                    },
                    "max_lifetime_seconds": {
                        "type": "integer",
                        "minimum": MAX_LIFETIME_SECONDS[0],
                        "maximum": MAX_LIFETIME_SECONDS[1],
                    },
                    "timeout_seconds": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": ISSUER_TIMEOUT_SECONDS,
                    },
                    "claims": _CLAIM_VOCABULARY,
                },
            },
        },
        "github": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "api_url": _HTTPS,
                "timeout_seconds": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": GITHUB_TIMEOUT_SECONDS,
                },
                "app": {
                    "type": "object",
                    "required": ["id"],
                    "oneOf": [
                        {"required": ["private_key"]},
                        {"required": ["kms"]},
                        {"required": ["pkcs11"]},
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "integer", "minimum": 1},
                        "private_key": _SOURCE,
                        "kms": {
                            "type": "object",
                            "description": "an AWS KMS RSA SIGN_VERIFY key; only kms:Sign and "
                            "kms:GetPublicKey are used",
                            "required": ["key_id"],
                            "additionalProperties": False,
                            "properties": {
                                "key_id": {"type": "string", "minLength": 1},
                                "region": {"type": "string", "minLength": 1},
                                "endpoint_url": _HTTPS,
                            },
                        },
                        "pkcs11": {
                            "type": "object",
                            "description": "a key on a PKCS#11 token (an HSM)",
                            "required": ["module", "token_label", "key_label", "pin"],
                            "additionalProperties": False,
                            "properties": {
                                "module": {"type": "string", "minLength": 1},
                                "token_label": {"type": "string", "minLength": 1},
                                "key_label": {"type": "string", "minLength": 1},
                                "pin": _SOURCE,
                            },
                        },
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
