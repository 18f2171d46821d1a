"""The configuration file, parsed once into typed, immutable objects.

`load()` reads the YAML file, the policy files it globs, the secret sources
it names and the environment overlays the SPEC lists; every problem is
reported as `FILE:LINE: message` in one `ConfigError`. Nothing else in the
package reads the environment or touches raw YAML.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from exchanger.config import policies as policy_config
from exchanger.config import yamlsource
from exchanger.config.model import (
    GITHUB_VOCABULARY,
    MIN_KEY_BITS,
    REGISTERED_CLAIMS,
    SIGNING_ALGORITHMS,
    AppKey,
    ClaimVocabulary,
    Config,
    GitHubAppConfig,
    GitHubConfig,
    IssuerConfig,
    KmsKey,
    PemKey,
    Pkcs11Key,
    Secret,
    ServerConfig,
)
from exchanger.config.yamlsource import Problems, Section, YamlError, YList, YMap, location
from exchanger.errors import ConfigError
from exchanger.policy.lint import glob_star
from exchanger.policy.model import ScopeGuard
from exchanger.policy.patterns import REGEX_PREFIX, Pattern, PatternError

_TOP_KEYS = frozenset(
    {
        "server",
        "issuers",
        "github",
        "runner_scopes",
        "secrets",
        "policies",
        "policy_files",
        "rate_limit",
        "state",
    }
)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

# Bounds the loader enforces; `schema` publishes the same numbers from here.
MAX_BODY_BYTES = (1024, 16 << 20)
#: `server.*`: (lowest, highest, default); the schema publishes the same numbers.
SERVER_INTEGERS = {
    "max_body_bytes": (*MAX_BODY_BYTES, ServerConfig.max_body_bytes),
    "max_header_bytes": (4096, 1 << 20, ServerConfig.max_header_bytes),
    "header_timeout_seconds": (1, 300, ServerConfig.header_timeout_seconds),
    "body_timeout_seconds": (1, 300, ServerConfig.body_timeout_seconds),
    "keepalive_timeout_seconds": (1, 300, ServerConfig.keepalive_timeout_seconds),
    "max_concurrency": (1, 100_000, ServerConfig.max_concurrency),
}
LEEWAY_SECONDS = (0, 300)
MAX_LIFETIME_SECONDS = (1, 7 * 86400)
ISSUER_TIMEOUT_SECONDS = 60  # (0, this]
GITHUB_TIMEOUT_SECONDS = 120  # (0, this]
#: `issuers[].claims: any`: the issuer's claims are not checked (the explicit opt-out).
ANY_CLAIM = "any"


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate the config at `path`; raise ConfigError listing every problem.

    The ConfigError carries the warnings too, so `check` prints them alongside.
    """
    env = os.environ if environ is None else environ
    path = Path(path)
    problems = Problems()
    where = str(path)
    try:
        data = load_yaml_mapping(path)
    except YamlError as exc:
        raise ConfigError([f"{location(where, exc.line)}: {exc}"]) from None
    root = Section(data, where, problems)
    root.only(_TOP_KEYS)
    server = _server(root, env)
    issuers = _issuers(root)
    origin = _Origin(path.parent, env)
    github = _github(root, origin)
    guard = _scope_guard(root, env)
    secrets = _secrets(root, origin)
    rate_limit = policy_config.parse_rate_limit(root, "rate_limit")
    redis_url = _state(root, origin)
    context = policy_config.Context(
        base=path.parent,
        github_app=github is not None and github.app is not None,
        github_token=github is not None and github.token is not None,
        secret_names=frozenset(secrets),
        issuers={issuer.issuer: issuer.claims for issuer in issuers},
        shared_state=redis_url is not None,
        rate_limit_key=rate_limit.key if rate_limit else "repository_id",
    )
    policies = policy_config.load_policies(root, context)
    if problems.errors:
        raise ConfigError(problems.errors, problems.warnings)
    return Config(
        path=path,
        server=server,
        issuers=issuers,
        github=github,
        runner_scopes=guard,
        secrets=secrets,
        policies=policies,
        warnings=tuple(problems.warnings),
        rate_limit=rate_limit,
        redis_url=redis_url,
    )


def load_yaml_mapping(path: Path) -> YMap:
    """A YAML file that must hold a mapping at its top."""
    data = yamlsource.load(path)
    if not isinstance(data, YMap):
        raise YamlError("the file must hold a mapping", 1)
    return data


def _server(root: Section, env: Mapping[str, str]) -> ServerConfig:
    section = root.sub("server")
    limits = {name: default for name, (_, _, default) in SERVER_INTEGERS.items()}
    if section is not None:
        section.only(frozenset(SERVER_INTEGERS))
        for name, (low, high, default) in SERVER_INTEGERS.items():
            limits[name] = section.integer(name, low, high, default)
    host = env.get("BIND") or ServerConfig.host
    port = ServerConfig.port
    if env.get("PORT"):
        try:
            port = int(env["PORT"])
        except ValueError:
            port = -1
        if not 0 < port < 65536:
            root.problems.error(root.file, 0, "env PORT: must be a port number")
            port = ServerConfig.port
    return ServerConfig(host=host, port=port, **limits)


_ISSUER_KEYS = frozenset(
    {
        "issuer",
        "audiences",
        "jwks_uri",
        "algorithms",
        "leeway_seconds",
        "max_lifetime_seconds",
        "timeout_seconds",
        "claims",
    }
)


def _issuers(root: Section) -> tuple[IssuerConfig, ...]:
    items = root.get("issuers", YList, required=True)
    if items is None:
        return ()
    if not items:
        root.error("issuers", "at least one issuer is required")
    out: list[IssuerConfig] = []
    for item, line in zip(items, items.lines, strict=True):
        if not isinstance(item, YMap):
            root.problems.error(root.file, line, "issuers: each issuer must be a mapping")
            continue
        issuer = _issuer(Section(item, root.file, root.problems, "issuers[]"))
        if issuer is None:
            continue
        if any(seen.issuer == issuer.issuer for seen in out):
            root.problems.error(root.file, line, f"issuer {issuer.issuer!r} is configured twice")
        out.append(issuer)
    return tuple(out)


def _issuer(section: Section) -> IssuerConfig | None:
    section.only(_ISSUER_KEYS)
    issuer = section.get("issuer", str, required=True)
    if issuer is not None and not _is_https_url(issuer):
        section.error("issuer", "must be an https:// URL")
    audiences = section.strings("audiences", required=True) or []
    for audience, line in audiences:
        if audience.startswith("https://github.com/") or audience.startswith("https://github.com:"):
            section.problems.warn(
                section.file,
                line,
                f"audience {audience!r} looks like GitHub's default audience, which anyone "
                "in that organisation can obtain; use an audience only this gateway accepts",
            )
    jwks_uri = section.get("jwks_uri", str)
    if jwks_uri is not None and not _is_https_url(jwks_uri):
        section.error("jwks_uri", "must be an https:// URL")
    algorithms = section.strings("algorithms") or [("RS256", 0)]
    for name, line in algorithms:
        if name not in SIGNING_ALGORITHMS:
            section.problems.error(
                section.file,
                line,
                f"algorithm {name!r} is not allowed (choose from "
                f"{', '.join(sorted(SIGNING_ALGORITHMS))})",
            )
    leeway = section.integer("leeway_seconds", *LEEWAY_SECONDS, IssuerConfig.leeway_seconds)
    lifetime = section.integer(
        "max_lifetime_seconds", *MAX_LIFETIME_SECONDS, IssuerConfig.max_lifetime_seconds
    )
    timeout = section.get("timeout_seconds", (int, float))
    if timeout is not None and not 0 < timeout <= ISSUER_TIMEOUT_SECONDS:
        section.error("timeout_seconds", f"must be between 0 and {ISSUER_TIMEOUT_SECONDS}")
        timeout = None
    claims = _claim_vocabulary(section)
    if issuer is None or not audiences:
        return None
    return IssuerConfig(
        issuer=issuer,
        audiences=frozenset(a for a, _ in audiences),
        jwks_uri=jwks_uri,
        algorithms=tuple(dict.fromkeys(a for a, _ in algorithms)),
        leeway_seconds=leeway,
        max_lifetime_seconds=lifetime,
        timeout_seconds=float(timeout or IssuerConfig.timeout_seconds),
        claims=claims,
    )


def _claim_vocabulary(section: Section) -> ClaimVocabulary:
    """`claims`: the names this issuer sends (default GitHub's), or `any` to opt out.

    An entry ending in `*` is a prefix (`repo_property_*`). The registered JWT
    claims (iss, sub, aud, jti, iat, nbf, exp) are always part of the list.
    """
    raw = section.data.get("claims")
    if raw is None:
        return GITHUB_VOCABULARY
    if raw == ANY_CLAIM:
        return ClaimVocabulary(names=REGISTERED_CLAIMS, prefixes=(), any_claim=True)
    if not isinstance(raw, YList):
        section.error("claims", f"must be a list of claim names, or {ANY_CLAIM!r}")
        return GITHUB_VOCABULARY
    names, prefixes = set(REGISTERED_CLAIMS), []
    errors = len(section.problems.errors)
    for name, line in section.strings("claims") or []:
        stem = name.removesuffix("*")
        if not stem or "*" in stem:
            section.problems.error(
                section.file,
                line,
                f"{section.path}.claims: {name!r}: a * may only end a prefix, "
                "as in 'repo_property_*'",
            )
        elif stem != name:
            prefixes.append(stem)
        else:
            names.add(name)
    if len(section.problems.errors) > errors:  # already an error: no cascade of unknown claims
        return ClaimVocabulary(any_claim=True)
    return ClaimVocabulary(names=frozenset(names), prefixes=tuple(prefixes))


def _is_https_url(value: str) -> bool:
    rest = value[len("https://") :] if value.startswith("https://") else ""
    host = rest.split("/", 1)[0]
    return bool(host) and "@" not in host and not any(c.isspace() for c in value)


_GITHUB_KEYS = frozenset({"api_url", "timeout_seconds", "app", "token"})
_APP_KEYS = frozenset({"id", "private_key", "kms", "pkcs11", "installation_id"})


def _github(root: Section, origin: _Origin) -> GitHubConfig | None:
    env = origin.env
    section = root.sub("github")
    overlays = ("GITHUB_API_URL", "GITHUB_APP_ID", "GITHUB_APP_PRIVATE_KEY", "GITHUB_TOKEN")
    if section is None and not any(env.get(name) for name in overlays):
        return None
    if section is None:
        empty = YMap()
        empty.line, empty.lines = 0, {}
        section = Section(empty, root.file, root.problems, "github")
    section.only(_GITHUB_KEYS)
    api_url = env.get("GITHUB_API_URL") or section.get("api_url", str) or GitHubConfig.api_url
    if not _is_https_url(api_url):
        section.error("api_url", "must be an https:// URL")
    timeout = section.get("timeout_seconds", (int, float))
    if timeout is not None and not 0 < timeout <= GITHUB_TIMEOUT_SECONDS:
        section.error("timeout_seconds", f"must be between 0 and {GITHUB_TIMEOUT_SECONDS}")
    app = _github_app(section, origin)
    token = _env_secret(env, "GITHUB_TOKEN") or _source(section, "token", origin, "github.token")
    if app is not None and token is not None:
        section.error(None, "configure either a GitHub App (app) or a token, not both")
    asked_for_app = (
        "app" in section.data or env.get("GITHUB_APP_ID") or env.get("GITHUB_APP_PRIVATE_KEY")
    )
    if app is None and token is None and not asked_for_app:
        section.error(None, "needs a GitHub App (app) or a token")  # not again after an app error
    return GitHubConfig(
        api_url=api_url.rstrip("/"),
        timeout_seconds=float(timeout or GitHubConfig.timeout_seconds),
        app=app,
        token=token,
    )


def _github_app(section: Section, origin: _Origin) -> GitHubAppConfig | None:
    env = origin.env
    app = section.sub("app")
    if app is None and not (env.get("GITHUB_APP_ID") or env.get("GITHUB_APP_PRIVATE_KEY")):
        return None
    if app is not None:
        app.only(_APP_KEYS)
    app_id = _env_int(section, env, "GITHUB_APP_ID")
    if app_id is None and app is not None:
        app_id = _positive(app, "id", required=True)
    installation_id = _env_int(section, env, "GITHUB_APP_INSTALLATION_ID")
    if installation_id is None and app is not None:
        installation_id = _positive(app, "installation_id")
    key = _app_key(section, app, origin)
    if app_id is None or key is None:
        return None
    return GitHubAppConfig(id=app_id, key=key, installation_id=installation_id)


_KEY_KINDS = ("private_key", "kms", "pkcs11")


def _app_key(section: Section, app: Section | None, origin: _Origin) -> AppKey | None:
    """The App's key: a PEM (`private_key` or env GITHUB_APP_PRIVATE_KEY), `kms` or `pkcs11`."""
    pem = _env_secret(origin.env, "GITHUB_APP_PRIVATE_KEY")
    if pem is None and app is None:
        section.error("app", "GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY must be set together")
        return None
    if app is not None and pem is None:
        kinds = [kind for kind in _KEY_KINDS if kind in app.data]
        if len(kinds) != 1:
            app.error(None, "needs exactly one key: private_key, kms or pkcs11")
            return None
        if kinds[0] == "kms":
            return _kms_key(app)
        if kinds[0] == "pkcs11":
            return _pkcs11_key(app, origin)
        pem = _source(app, "private_key", origin, "github.app.private_key", required=True)
    if pem is None:
        return None
    private = _rsa_private_key(pem.value)
    if private is None:
        where, field_name = (app, "private_key") if app is not None else (section, "app")
        where.error(field_name, f"not an RSA private key in PEM (PKCS#1 or PKCS#8): {pem.origin}")
        return None
    if private.key_size < MIN_KEY_BITS:
        where, field_name = (app, "private_key") if app is not None else (section, "app")
        where.error(field_name, f"the key has {private.key_size} bits; at least {MIN_KEY_BITS}")
        return None
    return PemKey(source=pem, key=private)


def _kms_key(app: Section) -> KmsKey | None:
    kms = app.sub("kms", required=True)
    if kms is None:
        return None
    kms.only(frozenset({"key_id", "region", "endpoint_url"}))
    key_id = kms.get("key_id", str, required=True)
    endpoint = kms.get("endpoint_url", str)
    if endpoint is not None and not _is_https_url(endpoint):
        kms.error("endpoint_url", "must be an https:// URL")
    if not key_id:
        if key_id == "":
            kms.error("key_id", "must name a key: its ARN, id or alias/NAME")
        return None
    return KmsKey(key_id=key_id, region=kms.get("region", str), endpoint_url=endpoint)


def _pkcs11_key(app: Section, origin: _Origin) -> Pkcs11Key | None:
    token = app.sub("pkcs11", required=True)
    if token is None:
        return None
    token.only(frozenset({"module", "token_label", "key_label", "pin"}))
    names = {
        key: token.get(key, str, required=True) for key in ("module", "token_label", "key_label")
    }
    pin = _source(token, "pin", origin, "github.app.pkcs11.pin", required=True)
    module, token_label, key_label = names["module"], names["token_label"], names["key_label"]
    if not module or not token_label or not key_label or pin is None:
        return None
    return Pkcs11Key(module=module, token_label=token_label, key_label=key_label, pin=pin)


def _positive(section: Section, key: str, *, required: bool = False) -> int | None:
    """A GitHub id: a positive integer."""
    value = section.get(key, int, required=required)
    if value is not None and value < 1:
        section.error(key, "must be a positive integer")
        return None
    return None if value is None else int(value)


def _rsa_private_key(pem: str) -> rsa.RSAPrivateKey | None:
    """The App key, parsed once at load: PKCS#1 or PKCS#8 PEM, CRLF line endings tolerated."""
    text = pem.replace("\r\n", "\n").strip() + "\n"
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, rsa.RSAPrivateKey) else None


def _env_int(section: Section, env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if not raw:
        return None
    if not raw.isdigit():
        section.problems.error(section.file, 0, f"env {name}: must be a positive integer")
        return None
    return int(raw)


def _env_secret(env: Mapping[str, str], name: str) -> Secret | None:
    raw = env.get(name)
    return Secret(raw, f"env {name}") if raw else None


@dataclass(frozen=True)
class _Origin:
    """Where relative secret files and `{env: …}` sources resolve."""

    base: Path
    env: Mapping[str, str]


def _source(
    section: Section, key: str, origin: _Origin, what: str, *, required: bool = False
) -> Secret | None:
    """Resolve a `{value|env|file}` source; errors name the secret and source, never a value."""
    spec = section.sub(key, required=required)
    if spec is None:
        return None
    kinds = [k for k in ("value", "env", "file") if k in spec.data]
    spec.only(frozenset({"value", "env", "file"}))
    if len(kinds) != 1:
        spec.error(None, "must have exactly one of value, env, file")
        return None
    kind = kinds[0]
    ref = spec.get(kind, str, required=True)
    if ref is None:
        return None
    if kind == "value":
        return Secret(ref, f"{what}: inline value")
    if not ref:
        spec.error(kind, f"{what}: must name {'a variable' if kind == 'env' else 'a file'}")
        return None
    if kind == "env":
        value = origin.env.get(ref)
        if value is None:
            spec.error(kind, f"{what}: environment variable {ref} is not set")
            return None
        if not value:
            # An empty secret is a deployment mistake (a variable declared, never filled).
            spec.error(kind, f"{what}: environment variable {ref} is set but empty")
            return None
        return Secret(value, f"{what}: env {ref}")
    file = origin.base / ref
    try:
        # Bytes, not read_text(): universal newlines would turn every `\r` of the
        # secret into `\n`; only one trailing newline is the file's.
        text = file.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        if isinstance(exc, ValueError) and not isinstance(exc, UnicodeDecodeError):
            reason = "the path holds a NUL character"
        spec.error(kind, f"{what}: cannot read file {ref}: {reason}")
        return None
    return Secret(_strip_newline(text), f"{what}: file {ref}")


def _strip_newline(text: str) -> str:
    """One trailing newline (`\\n` or `\\r\\n`) is the file's, not the secret's."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _secrets(root: Section, origin: _Origin) -> Mapping[str, Mapping[str, Secret]]:
    section = root.sub("secrets")
    if section is None:
        return MappingProxyType({})
    out: dict[str, Mapping[str, Secret]] = {}
    for name in section.data:
        if not _is_name(name):
            section.error(name, "secret names use letters, digits, '.', '_' and '-'")
            continue
        fields = section.sub(name, required=True)
        if fields is None:
            continue
        if not fields.data:
            section.error(name, "a secret needs at least one field")
        values: dict[str, Secret] = {}
        for field_name in fields.data:
            if not _is_name(field_name):
                fields.error(field_name, "field names use letters, digits, '.', '_' and '-'")
                continue
            value = _source(fields, field_name, origin, f"secret {name}.{field_name}")
            if value is not None:
                values[field_name] = value
        out[name] = MappingProxyType(values)
    return MappingProxyType(out)


def _is_name(name: str) -> bool:
    return 0 < len(name) <= 128 and set(name) <= _NAME_CHARS


def _scope_guard(root: Section, env: Mapping[str, str]) -> ScopeGuard:
    """The `runner_scopes` guard; env ALLOWED_SCOPES/DENIED_SCOPES replace its lists."""
    section = root.sub("runner_scopes")
    if section is not None:
        section.only(frozenset({"allow", "deny"}))
    lists: dict[str, list[tuple[str, int]] | None] = {}
    for key, var in (("allow", "ALLOWED_SCOPES"), ("deny", "DENIED_SCOPES")):
        if var in env and env[var].strip():
            lists[key] = [(item.strip(), 0) for item in env[var].split(";") if item.strip()]
        else:
            lists[key] = section.strings(key) if section is not None else None
    compiled: dict[str, tuple[Pattern, ...] | None] = {}
    for key, entries in lists.items():
        if entries is None:
            compiled[key] = None
            continue
        patterns = []
        for source, line in entries:
            try:
                patterns.append(Pattern.compile(source, fold=True))
            except PatternError as exc:
                root.problems.error(root.file, line, f"runner_scopes.{key}: {exc}")
                continue
            if patterns[-1].regex is not None and any(ch.isupper() for ch in source):
                root.problems.warn(
                    root.file,
                    line,
                    f"runner_scopes.{key}: {source!r} has upper-case "
                    "letters, but requested scopes are lower-cased before matching",
                )
            fixed = glob_star(source[len(REGEX_PREFIX) :]) if patterns[-1].regex else None
            if fixed is not None:
                root.problems.warn(
                    root.file,
                    line,
                    f"runner_scopes.{key}: {source!r} looks like a glob, but match: takes a "
                    "regular expression (* repeats the character before it); "
                    f"did you mean '{REGEX_PREFIX}{fixed}'?",
                )
        compiled[key] = tuple(patterns)
    return ScopeGuard(allow=compiled["allow"], deny=compiled["deny"] or ())


def _state(root: Section, origin: _Origin) -> Secret | None:
    """`state: {redis_url: …}`: where replicas share limits and token ids.

    The URL may carry a password, so besides a plain string it may be a
    `{env: …}` or `{file: …}` source, like any other secret.
    """
    section = root.sub("state")
    if section is None:
        return None
    section.only(frozenset({"redis_url"}))
    if isinstance(section.data.get("redis_url"), YMap):
        url = _source(section, "redis_url", origin, "state.redis_url")
    else:
        plain = section.get("redis_url", str, required=True)
        url = None if plain is None else Secret(plain, "state.redis_url")
    if url is None:
        return None
    if not url.value.startswith(("redis://", "rediss://", "unix://")):
        section.error("redis_url", "must be a redis://, rediss:// or unix:// URL")
        return None
    return url
