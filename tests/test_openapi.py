"""`docs/openapi.yaml` describes the gateway's own HTTP API, and the gateway keeps to it.

- The description is valid OpenAPI 3.1, and its paths and methods are exactly the
  routes of the Starlette app `create_app` builds (found by introspection).
- Its request schemas follow the parser (`exchanger.request`) and the permission
  table (`exchanger.permissions`), and its error codes are the gateway's.
- Schemathesis (THREATS 46, 53, 55) generates valid and invalid requests for every
  operation and sends them over TLS to a running gateway in GitHub App mode, backed by
  the fake issuer and the fake GitHub: nothing answers 5xx, every status, content
  type, body and header is the documented one, and a 2xx never survives the token's
  removal. Each request carries one of several bearer tokens (none, good, a policy
  that grants everything, an ungranted repository, a forged signature), so the
  campaign reaches past the 401 layer into request parsing, policy and GitHub.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.routing import Route

from exchanger import errors
from exchanger.app import create_app
from exchanger.config.load import load_config
from exchanger.policy.asks import _JIT_FIELDS
from exchanger.policy.permissions import PERMISSIONS
from tests.fakes.github import FakeGitHub
from tests.fakes.issuer import FakeIssuer
from tests.gateway import Gateway, write_config

SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
#: Starlette answers HEAD for every GET route on its own; the description lists GET only.
IMPLICIT_METHODS = frozenset({"HEAD"})
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def description() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return loaded


def starlette_app(app: object) -> Starlette:
    """The Starlette app inside `create_app`'s request-id wrapper (its closure)."""
    if isinstance(app, Starlette):
        return app
    for cell in getattr(app, "__closure__", None) or ():
        inner = cell.cell_contents
        if callable(inner):
            try:
                return starlette_app(inner)
            except LookupError:
                continue
    raise LookupError("no Starlette app inside the ASGI callable")


def test_description_is_valid_openapi_3_1() -> None:
    document = description()
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_paths_and_methods_are_exactly_the_routes(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "https://issuer.invalid"))
    app = starlette_app(create_app(config))
    routes = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or set()) - IMPLICIT_METHODS
    }
    documented = {
        (path, method)
        for path, item in description()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert len(app.routes) == len({path for path, _ in routes})  # every route is a Route
    assert documented == routes


def test_every_exchange_is_bearer_protected_and_probes_are_open() -> None:
    document = description()
    assert document["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"] == {
        **document["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }
    for path, item in document["paths"].items():
        for operation in (op for method, op in item.items() if method in HTTP_METHODS):
            open_probe = path in ("/healthz", "/readyz", "/metrics")
            if path == "/oauth2/token":
                # The token is the form's subject_token; refusals are RFC 6749 400s.
                assert operation.get("security") == [], path
                assert {"400", "413", "429", "503"} <= set(operation["responses"])
                continue
            assert (operation.get("security") == []) is open_probe, path
            if not open_probe:
                assert {"400", "401", "403", "413", "429", "503"} <= set(operation["responses"])


def test_request_schemas_follow_the_parser() -> None:
    schemas = description()["components"]["schemas"]
    assert set(schemas["JitConfigRequest"]["properties"]) == set(_JIT_FIELDS)
    assert set(schemas["RunnerTokenRequest"]["properties"]) == {"scope"}
    assert set(schemas["InstallationTokenRequest"]["properties"]) == {
        "owner",
        "repositories",
        "permissions",
    }
    for name in ("JitConfigRequest", "RunnerTokenRequest", "InstallationTokenRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    permissions = schemas["Permissions"]
    assert permissions["additionalProperties"] is False
    documented = {
        name: tuple(schemas[ref["$ref"].rpartition("/")[2]]["enum"])
        for name, ref in permissions["properties"].items()
    }
    assert documented == dict(PERMISSIONS)


def test_error_codes_are_the_gateways() -> None:
    codes = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.ExchangerError)
        and cls is not errors.ExchangerError
    }
    documented = set(description()["components"]["schemas"]["Error"]["properties"]["error"]["enum"])
    # not_found and method_not_allowed come from routing (app.on_http_error)
    assert documented == codes | {"not_found", "method_not_allowed"}


# --- schemathesis against a running gateway -------------------------------------------------

#: A 400 for a body that the schema accepts is right only for these cross-field rules,
#: which JSON Schema does not express (SPEC: App mode and enterprise scopes, runner groups
#: on repository scopes, repositories of another owner).
CROSS_FIELD_REFUSALS = (
    "GitHub App tokens cannot manage enterprise runners",
    "runner_group applies to organization and enterprise scopes only",
    "repositories must belong to the requested owner",
)
TOKEN_KINDS = ("none", "good", "everything", "ungranted", "forged")

schema = schemathesis.openapi.from_path(
    SPEC_PATH,
    config=schemathesis.Config.from_dict(
        {
            "generation": {
                "mode": "all",
                "max-examples": 25,
                "with-security-parameters": False,
                "database": "none",
            },
            "checks": {
                # Checked below, with the cross-field exceptions named.
                "positive_data_acceptance": {"enabled": False},
            },
        }
    ),
)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


def token_kind(case: schemathesis.Case[Any]) -> str:
    """A token kind that depends only on the case, so Hypothesis replays it exactly."""
    what = (case.method, case.path, case.path_parameters, case.query, case.headers, case.body)
    return TOKEN_KINDS[zlib.crc32(repr(what).encode()) % len(TOKEN_KINDS)]


def bearer_for(kind: str, issuer: FakeIssuer) -> dict[str, str]:
    if kind == "none":
        return {}
    if kind == "forged":
        token = issuer.mint(key=issuer.attacker)
    else:
        claims: dict[str, dict[str, Any]] = {
            "good": {},
            "everything": {"repository_id": "99"},
            "ungranted": {"ref": "x"},
        }
        token = issuer.mint(**claims[kind])
    return {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_sec_53_api_conforms_to_its_description(
    case: schemathesis.Case[Any],
    app_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    session: requests.Session,
) -> None:
    kind = token_kind(case)
    headers: dict[str, str] | None = (
        {} if "authorization" in {h.lower() for h in case.headers or {}} else None
    )
    if headers is None:
        headers = bearer_for(kind, issuer)
    response = case.call_and_validate(
        base_url=app_gateway.url,
        session=session,
        headers=headers,
        verify=str(app_gateway.ca.ca_file),
        timeout=15,
    )
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if response.status_code == 400 and positive and case.path != "/oauth2/token":
        message = response.json()["message"]
        assert message in CROSS_FIELD_REFUSALS, (case.body, message)
    assert response.status_code < 500, response.text
    assert "traceback" not in response.text.lower()
