"""The JSON Schema agrees with the loader on every limit the loader enforces.

Each row sets one value in an otherwise valid config; the loader and the
schema must both accept it or both refuse it. Bounds are tried at the edge
and one step past it, so a limit enforced on only one side fails here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from exchanger.config.load import load_config
from exchanger.config.schema import SCHEMA
from exchanger.errors import ConfigError
from tests.keys import private_pem

PRIVATE = "https://issuer.internal"
PEM = private_pem()


def base() -> dict[str, Any]:
    return {
        "server": {"max_body_bytes": 65536},
        "issuers": [
            {"issuer": "https://token.actions.githubusercontent.com", "audiences": ["a"]},
            {"issuer": PRIVATE, "audiences": ["a"]},
        ],
        "github": {"app": {"id": 1, "private_key": {"env": "APP_KEY"}}},
        "secrets": {"registry": {"username": {"value": "ci-bot"}}},
        "policies": [
            {
                "name": "p",
                "claims": {"repository_owner_id": "65", "iss": PRIVATE},
                "grants": {
                    "secrets": ["registry"],
                    "runner": {"scopes": ["octo-org"], "labels": ["linux"]},
                    "installation": {
                        "repositories": ["${repository}"],
                        "permissions": {"contents": "read"},
                    },
                },
            }
        ],
        "rate_limit": {"per_minute": 60, "burst": 10},
    }


Mutation = Callable[[dict[str, Any]], None]


def _set(*path: Any) -> Callable[[Any], Mutation]:
    """A mutation that sets the value at `path` (keys and list indexes)."""

    def with_value(value: Any) -> Mutation:
        def mutate(document: dict[str, Any]) -> None:
            node: Any = document
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value

        return mutate

    return with_value


SERVER_BODY = _set("server", "max_body_bytes")
LEEWAY = _set("issuers", 0, "leeway_seconds")
LIFETIME = _set("issuers", 0, "max_lifetime_seconds")
ISSUER_TIMEOUT = _set("issuers", 0, "timeout_seconds")
GITHUB_TIMEOUT = _set("github", "timeout_seconds")
APP_ID = _set("github", "app", "id")
INSTALLATION_ID = _set("github", "app", "installation_id")
PER_MINUTE = _set("rate_limit", "per_minute")
BURST = _set("rate_limit", "burst")
POLICY_PER_MINUTE = _set("policies", 0, "rate_limit")
LABELS = _set("policies", 0, "grants", "runner", "labels")
REPOSITORIES = _set("policies", 0, "grants", "installation", "repositories")
ISSUER_CLAIMS = _set("issuers", 1, "claims")
UNANCHORED = _set("policies", 0, "unanchored")
ENV_SOURCE = _set("secrets", "registry", "username")

# (id, mutation, the loader accepts it)
LIMITS: list[tuple[str, Mutation, bool]] = [
    ("max-body-bytes-low-edge", SERVER_BODY(1024), True),
    ("max-body-bytes-below", SERVER_BODY(1023), False),
    ("max-body-bytes-high-edge", SERVER_BODY(16 << 20), True),
    ("max-body-bytes-above", SERVER_BODY((16 << 20) + 1), False),
    ("leeway-low-edge", LEEWAY(0), True),
    ("leeway-below", LEEWAY(-1), False),
    ("leeway-high-edge", LEEWAY(300), True),
    ("leeway-above", LEEWAY(301), False),
    ("lifetime-low-edge", LIFETIME(1), True),
    ("lifetime-below", LIFETIME(0), False),
    ("lifetime-high-edge-7-days", LIFETIME(7 * 86400), True),
    ("lifetime-above-7-days", LIFETIME(7 * 86400 + 1), False),
    ("issuer-timeout-zero", ISSUER_TIMEOUT(0), False),
    ("issuer-timeout-small", ISSUER_TIMEOUT(0.001), True),
    ("issuer-timeout-high-edge", ISSUER_TIMEOUT(60), True),
    ("issuer-timeout-above", ISSUER_TIMEOUT(60.5), False),
    ("github-timeout-zero", GITHUB_TIMEOUT(0), False),
    ("github-timeout-high-edge", GITHUB_TIMEOUT(120), True),
    ("github-timeout-above", GITHUB_TIMEOUT(121), False),
    ("app-id-zero", APP_ID(0), False),
    ("app-id-negative", APP_ID(-5), False),
    ("app-id-one", APP_ID(1), True),
    ("installation-id-zero", INSTALLATION_ID(0), False),
    ("installation-id-one", INSTALLATION_ID(1), True),
    ("per-minute-zero", PER_MINUTE(0), False),
    ("per-minute-high-edge", PER_MINUTE(1_000_000), True),
    ("per-minute-above", PER_MINUTE(1_000_001), False),
    ("burst-zero", BURST(0), False),
    ("burst-high-edge", BURST(1_000_000), True),
    ("burst-above", BURST(1_000_001), False),
    ("policy-rate-limit-above", POLICY_PER_MINUTE({"per_minute": 2e6, "burst": 1}), False),
    ("policy-rate-limit-ok", POLICY_PER_MINUTE({"per_minute": 10, "burst": 1}), True),
    ("labels-high-edge", LABELS([f"l{i}" for i in range(100)]), True),
    ("labels-above", LABELS([f"l{i}" for i in range(101)]), False),
    ("repositories-high-edge", REPOSITORIES([f"o/r{i}" for i in range(500)]), True),
    ("repositories-above", REPOSITORIES([f"o/r{i}" for i in range(501)]), False),
    ("repositories-star", REPOSITORIES("*"), True),
    ("issuer-claims-any", ISSUER_CLAIMS("any"), True),
    ("issuer-claims-list", ISSUER_CLAIMS(["repository_owner_id", "team_*"]), True),
    ("issuer-claims-other-word", ISSUER_CLAIMS("all"), False),
    ("issuer-claims-empty", ISSUER_CLAIMS([]), False),
    ("issuer-claims-lone-star", ISSUER_CLAIMS(["*"]), False),
    ("issuer-claims-inner-star", ISSUER_CLAIMS(["a*b"]), False),
    ("issuer-claims-empty-name", ISSUER_CLAIMS([""]), False),
    ("unanchored-private", UNANCHORED({"anyone_signed_by": PRIVATE}), True),
    (
        "unanchored-github",
        UNANCHORED({"anyone_signed_by": "https://token.actions.githubusercontent.com"}),
        False,
    ),
    ("unanchored-http", UNANCHORED({"anyone_signed_by": "http://issuer.internal"}), False),
    ("unanchored-empty", UNANCHORED({}), False),
    ("unanchored-extra-key", UNANCHORED({"anyone_signed_by": PRIVATE, "x": 1}), False),
    ("env-source-empty-name", ENV_SOURCE({"env": ""}), False),
]


def _loader_accepts(tmp_path: Path, document: dict[str, Any]) -> bool:
    path = tmp_path / "exchanger.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    try:
        load_config(path, environ={"APP_KEY": PEM})
    except ConfigError:
        return False
    return True


def _schema_accepts(document: dict[str, Any]) -> bool:
    return not list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(document))


def test_the_base_config_is_valid_on_both_sides(tmp_path: Path) -> None:
    assert _loader_accepts(tmp_path, base())
    assert _schema_accepts(base())


@pytest.mark.parametrize(
    ("mutate", "accepted"), [c[1:] for c in LIMITS], ids=[c[0] for c in LIMITS]
)
def test_schema_and_loader_agree_on_every_limit(
    tmp_path: Path, mutate: Mutation, accepted: bool
) -> None:
    document = copy.deepcopy(base())
    mutate(document)
    assert _loader_accepts(tmp_path, document) is accepted
    assert _schema_accepts(document) is accepted


def test_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
