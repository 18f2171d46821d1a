"""The config file: FILE:LINE errors, secret sources, env overlays, policy checks, warnings."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from exchanger.config.load import load_config
from exchanger.config.model import Config, GitHubAppConfig, KmsKey, PemKey, Pkcs11Key
from exchanger.errors import ConfigError
from tests.keys import private_pem

ISSUERS = """\
issuers:
  - issuer: https://token.actions.githubusercontent.com
    audiences: ["https://exchanger.example"]
"""
CANARY = "canary-secret-value-5f0c2a91"
_d = textwrap.dedent


PEM = private_pem(pkcs1=True)
ENV_PEM = private_pem(pkcs1=True)
PUBLIC_PEM = (
    serialization.load_pem_private_key(PEM.encode(), None)
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
PEM_CANARY = PEM.splitlines()[5]  # a line of the key's body: never in an error or a repr


def write(directory: Path, text: str, name: str = "exchanger.yaml") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


#: By default a GITHUB_TOKEN overlay supplies the `github` section runner and
#: installation grants need; tests of the environment pass their own.
GITHUB_ENV = {"GITHUB_TOKEN": "not-a-real-token"}


def load(directory: Path, text: str, environ: Mapping[str, str] | None = None) -> Config:
    return load_config(write(directory, text), environ=GITHUB_ENV if environ is None else environ)


def problems(directory: Path, text: str, environ: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(directory, text, environ)
    return info.value.problems


def one_problem(directory: Path, text: str, environ: Mapping[str, str] | None = None) -> str:
    found = problems(directory, text, environ)
    assert len(found) == 1, found
    return found[0]


def warnings(directory: Path, text: str, environ: Mapping[str, str] | None = None) -> list[str]:
    return list(load(directory, text, environ).warnings)


def with_policy(claims: str, grants: str = "{secrets: [registry]}", extra: str = "") -> str:
    """One `registry` secret and one policy `p` at line 7 (claims line 8, grants line 9)."""
    return (
        ISSUERS
        + extra
        + "secrets:\n"
        + "  registry: {username: {value: ci-bot}}\n"
        + "policies:\n"
        + "  - name: p\n"
        + f"    claims: {claims}\n"
        + f"    grants: {grants}\n"
    )


OWNER = 'repository_owner_id: "65"'
ID_CLAIMS = "{" + OWNER + "}"


def test_minimal_config_loads(tmp_path: Path) -> None:
    loaded = load(tmp_path, with_policy(ID_CLAIMS))
    assert loaded.warnings == ()
    assert [p.name for p in loaded.policies] == ["p"]
    assert loaded.summary().endswith("ok: 1 issuer(s), 1 policy, 1 secret(s)")


# --- FILE:LINE points at the offending value --------------------------------------------------

LINE_CASES: list[tuple[str, str, int, str]] = [
    (
        "non-https-issuer",
        """\
        issuers:
          - issuer: http://token.actions.githubusercontent.com
            audiences: [x]
        """,
        2,
        "issuers[].issuer: must be an https:// URL",
    ),
    (
        "hmac-algorithm",
        """\
        issuers:
          - issuer: https://issuer.example
            audiences: [x]
            algorithms:
              - RS256
              - HS256
        """,
        6,
        "algorithm 'HS256' is not allowed",
    ),
    (
        "unknown-top-level-key",
        ISSUERS
        + _d(
            """\
        polices:
          - name: typo
        """
        ),
        4,
        "polices: unknown key",
    ),
    (
        "duplicate-yaml-key",
        """\
        issuers:
          - issuer: https://issuer.example
            audiences: [x]
            issuer: https://evil.example
        """,
        4,
        "duplicate key 'issuer'",
    ),
    (
        "bad-re2-in-block-list",
        ISSUERS
        + _d(
            """\
        policies:
          - name: bad-regex
            claims:
              repository_owner_id: "65"
              ref:
                - refs/heads/main
                - "match:refs/heads/(?=x)"
            grants: {secrets: [x]}
        """
        ),
        10,
        "policy 'bad-regex'.claims.ref: invalid RE2 pattern 'refs/heads/(?=x)'",
    ),
    (
        "unknown-permission",
        ISSUERS
        + _d(
            """\
        policies:
          - name: app-token
            claims: {repository_owner_id: "65"}
            grants:
              installation:
                repositories: "*"
                permissions:
                  contents: read
                  superpowers: read
        """
        ),
        12,
        "superpowers: is not a GitHub App permission",
    ),
    (
        "missing-env-var",
        ISSUERS
        + _d(
            """\
        secrets:
          registry:
            username: {value: ci-bot}
            password: {env: REGISTRY_PASSWORD_FOR_TEST}
        """
        ),
        7,
        "secret registry.password: environment variable REGISTRY_PASSWORD_FOR_TEST is not set",
    ),
    (
        "empty-claims",
        ISSUERS
        + _d(
            """\
        policies:
          - name: everything
            claims: {}
            grants: {secrets: [x]}
        """
        ),
        6,
        "claims: must not be empty",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "message"), [c[1:] for c in LINE_CASES], ids=[c[0] for c in LINE_CASES]
)
def test_error_points_at_the_offending_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "exchanger.yaml"
    found = problems(tmp_path, text)
    matching = [p for p in found if message in p]
    assert matching, found
    assert matching[0].startswith(f"{path}:{line}: "), matching


def test_every_error_is_file_colon_line(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        issuers:
          - issuer: http://a.example
            audiences: [x]
            algorithms: [none]
            jwks_uri: http://a.example/jwks
        secrets:
          s: {f: {env: NOT_SET_ANYWHERE_123}}
        policies:
          - name: p
            claims: {}
        """,
    )
    assert len(found) >= 5
    for problem in found:
        file, line, message = problem.split(":", 2)
        assert file == str(tmp_path / "exchanger.yaml")
        assert line.isdigit()
        assert int(line) > 0
        assert message.startswith(" ")


# --- unknown keys -----------------------------------------------------------------------------

UNKNOWN_KEYS: list[tuple[str, str, str]] = [
    ("top-level", ISSUERS + "serverr: {}\n", "serverr"),
    ("server", ISSUERS + "server: {max_body: 1}\n", "max_body"),
    (
        "issuer",
        "issuers:\n  - issuer: https://i.example\n    audiences: [x]\n    audience: y\n",
        "audience",
    ),
    ("github", ISSUERS + "github: {token: {value: t}, url: https://x}\n", "url"),
    ("github-app", ISSUERS + "github:\n  app: {id: 1, key: {value: k}}\n", "key"),
    ("source", ISSUERS + "secrets:\n  s: {f: {valeu: x}}\n", "valeu"),
    ("runner-scopes", ISSUERS + "runner_scopes: {allowed: [a]}\n", "allowed"),
    ("policy", with_policy(ID_CLAIMS).replace("    grants:", "    grant: x\n    grants:"), "grant"),
    ("grants", with_policy(ID_CLAIMS, "{secrets: [registry], secret: [x]}"), "secret"),
    ("runner", with_policy(ID_CLAIMS, "{runner: {scopes: [a], scope: b}}"), "scope"),
    (
        "installation",
        with_policy(
            ID_CLAIMS,
            '{installation: {repositories: "*", permissions: {contents: read}, permission: x}}',
        ),
        "permission",
    ),
]


@pytest.mark.parametrize(
    ("text", "key"), [c[1:] for c in UNKNOWN_KEYS], ids=[c[0] for c in UNKNOWN_KEYS]
)
def test_unknown_keys_are_errors(tmp_path: Path, text: str, key: str) -> None:
    found = problems(tmp_path, text)
    assert any(f"{key}: unknown key" in p for p in found), found


def test_duplicate_key_in_a_policy_file_names_that_file_and_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        """\
        - name: a
          claims: {repository_owner_id: "65"}
          claims: {repository_owner_id: "66"}
          grants: {secrets: [x]}
        """,
        "policies.d/a.yaml",
    )
    found = problems(tmp_path, with_policy(ID_CLAIMS) + 'policy_files: ["policies.d/*.yaml"]\n')
    assert found == [f"{tmp_path / 'policies.d' / 'a.yaml'}:3: duplicate key 'claims'"]


# --- secret sources ---------------------------------------------------------------------------


def test_missing_env_var_names_secret_and_variable_not_value(tmp_path: Path) -> None:
    problem = one_problem(
        tmp_path,
        ISSUERS + "secrets:\n  registry:\n    password: {env: REGISTRY_PASSWORD}\n",
        {"OTHER": CANARY},
    )
    assert "registry.password" in problem
    assert "REGISTRY_PASSWORD" in problem
    assert CANARY not in problem


def test_missing_file_names_secret_and_file(tmp_path: Path) -> None:
    problem = one_problem(
        tmp_path, ISSUERS + "secrets:\n  registry:\n    password: {file: missing-pw.txt}\n"
    )
    assert problem.startswith(f"{tmp_path / 'exchanger.yaml'}:6: ")
    assert "registry.password" in problem
    assert "missing-pw.txt" in problem


BROKEN_SOURCES: list[tuple[str, str]] = [
    ("plain-string", f"password: {CANARY}"),
    ("two-kinds", f"password: {{value: {CANARY}, env: X}}"),
    ("list", f"password: [{CANARY}]"),
    ("unknown-kind", f"password: {{secret: {CANARY}}}"),
    ("value-not-a-string", f"password: {{value: [{CANARY}]}}"),
    ("bad-field-name", f'"pass word": {{value: {CANARY}}}'),
]


@pytest.mark.parametrize(
    "entry", [c[1] for c in BROKEN_SOURCES], ids=[c[0] for c in BROKEN_SOURCES]
)
def test_a_secret_value_never_appears_in_errors(tmp_path: Path, entry: str) -> None:
    found = problems(tmp_path, ISSUERS + f"secrets:\n  registry:\n    {entry}\n")
    assert found
    assert not [p for p in found if CANARY in p]


def test_a_secret_value_never_appears_in_a_repr(tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text(CANARY + "-file\n")
    loaded = load(
        tmp_path,
        ISSUERS
        + textwrap.dedent(
            f"""\
            github:
              app:
                id: 1
                private_key: {{env: APP_KEY}}
            secrets:
              registry:
                inline: {{value: {CANARY}-inline}}
                from-env: {{env: REGISTRY_PASSWORD}}
                from-file: {{file: pw.txt}}
            """
        ),
        {"REGISTRY_PASSWORD": CANARY + "-env", "APP_KEY": PEM},
    )
    registry = loaded.secrets["registry"]
    assert registry["inline"].value == CANARY + "-inline"
    assert registry["from-env"].value == CANARY + "-env"
    assert registry["from-file"].value == CANARY + "-file"
    assert loaded.github is not None
    assert loaded.github.app is not None
    key = loaded.github.app.key
    assert isinstance(key, PemKey)
    assert key.source.value == PEM
    for text in (repr(loaded), str(loaded), repr(loaded.secrets), repr(registry["inline"])):
        assert CANARY not in text
        assert PEM_CANARY not in text
    token = load(tmp_path, ISSUERS + "github: {token: {env: T}}\n", {"T": CANARY})
    assert token.github is not None
    assert token.github.token is not None
    assert token.github.token.value == CANARY
    assert CANARY not in repr(token)


FILE_CONTENTS: list[tuple[str, bytes, str]] = [
    ("lf", b"s3cret\n", "s3cret"),
    ("crlf", b"s3cret\r\n", "s3cret"),
    ("none", b"s3cret", "s3cret"),
    ("two-lf", b"s3cret\n\n", "s3cret\n"),
    ("two-crlf", b"s3cret\r\n\r\n", "s3cret\r\n"),
    ("lone-cr-kept", b"s3cret\r", "s3cret\r"),
    ("inner-crlf-kept", b"line1\r\nline2\r\n", "line1\r\nline2"),
    ("inner-cr-kept", b"a\rb\n", "a\rb"),
    ("leading-space-kept", b"  s3cret \n", "  s3cret "),
    ("empty", b"", ""),
    ("only-newline", b"\n", ""),
]


@pytest.mark.parametrize(
    ("content", "expected"), [c[1:] for c in FILE_CONTENTS], ids=[c[0] for c in FILE_CONTENTS]
)
def test_file_source_strips_exactly_one_trailing_newline(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    (tmp_path / "pw.txt").write_bytes(content)
    loaded = load(tmp_path, ISSUERS + "secrets:\n  registry:\n    password: {file: pw.txt}\n")
    assert loaded.secrets["registry"]["password"].value == expected


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    (conf / "keys").mkdir(parents=True)
    (conf / "keys" / "pw.txt").write_text("from-conf-dir\n")
    (tmp_path / "outside.txt").write_text("one-level-up\n")
    write(
        conf,
        "- {name: from-file, claims: {" + OWNER + "}, grants: {secrets: [registry]}}\n",
        "p/a.yaml",
    )
    write(
        conf,
        ISSUERS
        + textwrap.dedent(
            """\
            secrets:
              registry:
                password: {file: keys/pw.txt}
                other: {file: ../outside.txt}
            policy_files: ["p/*.yaml"]
            """
        ),
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keys").mkdir()
    (elsewhere / "keys" / "pw.txt").write_text("WRONG\n")
    monkeypatch.chdir(elsewhere)
    for path in (conf / "exchanger.yaml", Path("../conf/exchanger.yaml")):
        loaded = load_config(path, environ={})
        assert loaded.secrets["registry"]["password"].value == "from-conf-dir"
        assert loaded.secrets["registry"]["other"].value == "one-level-up"
        assert [p.name for p in loaded.policies] == ["from-file"]


def test_absolute_secret_file_and_policy_glob(tmp_path: Path) -> None:
    (tmp_path / "abs").mkdir()
    (tmp_path / "abs" / "pw.txt").write_text("absolute\n")
    write(
        tmp_path / "abs",
        "- {name: abs, claims: {" + OWNER + "}, grants: {secrets: [registry]}}\n",
        "a.yaml",
    )
    loaded = load(
        tmp_path / "conf",
        ISSUERS
        + f"secrets:\n  registry:\n    password: {{file: {tmp_path / 'abs' / 'pw.txt'}}}\n"
        + f'policy_files: ["{tmp_path / "abs"}/*.yaml"]\n',
    )
    assert loaded.secrets["registry"]["password"].value == "absolute"
    assert [p.name for p in loaded.policies] == ["abs"]


# --- environment overlays ---------------------------------------------------------------------

APP_CONFIG = (
    ISSUERS
    + """\
github:
  api_url: https://github.example/api/v3
  app:
    id: 1
    private_key: {env: FILE_KEY}
    installation_id: 2
runner_scopes:
  allow: ["file-org"]
  deny: ["file-org/secret"]
"""
)
TOKEN_CONFIG = ISSUERS + "github:\n  token: {value: from-file}\n"


def _app(loaded: Config) -> GitHubAppConfig:
    assert loaded.github is not None
    assert loaded.github.app is not None
    return loaded.github.app


OVERLAYS: list[tuple[str, str, str, object]] = [
    ("GITHUB_API_URL", "https://ghe.example/api/v3/", "api_url", "https://ghe.example/api/v3"),
    ("GITHUB_APP_ID", "42", "app_id", 42),
    ("GITHUB_APP_PRIVATE_KEY", "ENV_PEM", "private_key", "ENV_PEM"),
    ("GITHUB_APP_INSTALLATION_ID", "77", "installation_id", 77),
    ("GITHUB_TOKEN", "from-env", "token", "from-env"),
    ("ALLOWED_SCOPES", "env-org; match:other-org/.*", "allow", ("env-org", "match:other-org/.*")),
    ("DENIED_SCOPES", "file-org/public;", "deny", ("file-org/public",)),
    ("BIND", "127.0.0.1", "host", "127.0.0.1"),
    ("PORT", "9999", "port", 9999),
]


def _read(loaded: Config, what: str) -> object:
    github = loaded.github
    assert github is not None
    guard = loaded.runner_scopes
    if what == "api_url":
        return github.api_url
    if what == "app_id":
        return _app(loaded).id
    if what == "private_key":
        key = _app(loaded).key
        assert isinstance(key, PemKey)
        return key.source.value
    if what == "installation_id":
        return _app(loaded).installation_id
    if what == "token":
        assert github.token is not None
        return github.token.value
    if what == "allow":
        assert guard.allow is not None
        return tuple(p.source for p in guard.allow)
    if what == "deny":
        return tuple(p.source for p in guard.deny)
    if what == "host":
        return loaded.server.host
    assert what == "port"
    return loaded.server.port


@pytest.mark.parametrize(
    ("variable", "value", "what", "expected"), OVERLAYS, ids=[c[0] for c in OVERLAYS]
)
def test_env_overlay_replaces_the_file_value(
    tmp_path: Path, variable: str, value: str, what: str, expected: object
) -> None:
    base = TOKEN_CONFIG if variable == "GITHUB_TOKEN" else APP_CONFIG
    file_env = {"FILE_KEY": PEM}
    value = ENV_PEM if value == "ENV_PEM" else value
    expected = ENV_PEM if expected == "ENV_PEM" else expected
    before = load(tmp_path, base, file_env)
    after = load(tmp_path, base, {**file_env, variable: value})
    assert _read(after, what) == expected
    assert _read(before, what) != expected


def test_env_overlays_work_without_a_github_section(tmp_path: Path) -> None:
    loaded = load(tmp_path, ISSUERS, {"GITHUB_TOKEN": "t", "GITHUB_API_URL": "https://ghe.example"})
    assert loaded.github is not None
    assert loaded.github.api_url == "https://ghe.example"
    assert loaded.github.token is not None
    app = load(tmp_path, ISSUERS, {"GITHUB_APP_ID": "5", "GITHUB_APP_PRIVATE_KEY": PEM})
    assert _app(app).id == 5


@pytest.mark.parametrize(
    "environ",
    [{"PORT": "http"}, {"PORT": "70000"}, {"GITHUB_APP_ID": "x1"}, {"GITHUB_API_URL": "http://x"}],
    ids=["port-not-a-number", "port-out-of-range", "app-id-not-a-number", "api-url-not-https"],
)
def test_bad_env_overlay_is_a_config_error(tmp_path: Path, environ: dict[str, str]) -> None:
    found = problems(tmp_path, APP_CONFIG, {"FILE_KEY": PEM, **environ})
    assert found
    assert all(p.startswith(f"{tmp_path / 'exchanger.yaml'}:") for p in found)


# --- issuers and GitHub -----------------------------------------------------------------------

URL_CASES: list[tuple[str, str, str]] = [
    ("issuer-http", "issuers:\n  - {issuer: http://i.example, audiences: [x]}\n", "issuer"),
    ("issuer-no-host", "issuers:\n  - {issuer: 'https://', audiences: [x]}\n", "issuer"),
    (
        "issuer-userinfo",
        "issuers:\n  - {issuer: 'https://a@b.example', audiences: [x]}\n",
        "issuer",
    ),
    (
        "issuer-upper-scheme",
        "issuers:\n  - {issuer: 'HTTP://i.example', audiences: [x]}\n",
        "issuer",
    ),
    (
        "jwks-uri-http",
        "issuers:\n  - {issuer: https://i.example, audiences: [x], jwks_uri: http://i.example/k}\n",
        "jwks_uri",
    ),
    (
        "api-url-http",
        ISSUERS + "github: {api_url: http://ghe.example, token: {value: t}}\n",
        "api_url",
    ),
]


@pytest.mark.parametrize(("text", "key"), [c[1:] for c in URL_CASES], ids=[c[0] for c in URL_CASES])
def test_non_https_urls_are_rejected(tmp_path: Path, text: str, key: str) -> None:
    assert any(f"{key}: must be an https:// URL" in p for p in problems(tmp_path, text))


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512", "none", "None", "rs256"])
def test_hmac_and_none_algorithms_are_rejected(tmp_path: Path, algorithm: str) -> None:
    text = (
        f"issuers:\n  - {{issuer: https://i.example, audiences: [x], algorithms: [{algorithm}]}}\n"
    )
    assert f"algorithm '{algorithm}' is not allowed" in one_problem(tmp_path, text)


def test_github_app_and_token_together_is_an_error(tmp_path: Path) -> None:
    text = APP_CONFIG.replace("  api_url:", "  token: {value: t}\n  api_url:")
    assert any("not both" in p for p in problems(tmp_path, text, {"FILE_KEY": PEM}))


# --- policies ---------------------------------------------------------------------------------


def test_duplicate_policy_names_across_inline_and_files_name_both_places(tmp_path: Path) -> None:
    write(
        tmp_path,
        '# a comment\n- {name: p, claims: {repository_owner_id: "1"}, grants: {secrets: [x]}}\n',
        "policies.d/dup.yaml",
    )
    problem = one_problem(
        tmp_path, with_policy(ID_CLAIMS) + 'policy_files: ["policies.d/*.yaml"]\n'
    )
    assert problem == (
        f"{tmp_path / 'policies.d' / 'dup.yaml'}:2: policy name 'p' is already used at "
        f"{tmp_path / 'exchanger.yaml'}:7"
    )


def test_duplicate_policy_names_inline(tmp_path: Path) -> None:
    text = with_policy(ID_CLAIMS) + "  - name: p\n    effect: deny\n    claims: {event_name: pr}\n"
    problem = one_problem(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'exchanger.yaml'}:10: policy name 'p'")
    assert problem.endswith(f"{tmp_path / 'exchanger.yaml'}:7")


POLICY_ERRORS: list[tuple[str, str, str]] = [
    (
        "bad-re2",
        with_policy('{ref: "match:(a"}'),
        "policy 'p'.claims.ref: invalid RE2 pattern '(a'",
    ),
    ("backreference", with_policy('{ref: "match:(a)\\\\1"}'), "policy 'p'.claims.ref: invalid RE2"),
    (
        "unbalanced-paren",
        with_policy('{ref: "match:a)|(.*"}'),
        "policy 'p'.claims.ref: invalid RE2",
    ),
    ("empty-claims", with_policy("{}"), "policy 'p'.claims: must not be empty"),
    ("claims-not-a-mapping", with_policy("[a]"), "policy 'p'.claims: must be a mapping"),
    (
        "claims-missing",
        with_policy(ID_CLAIMS).replace("    claims:", "    x-claims:"),
        "claims: required",
    ),
    ("empty-pattern-list", with_policy("{ref: []}"), "ref: needs at least one pattern"),
    ("float-pattern", with_policy("{repository_id: 1.5}"), "repository_id: patterns must be"),
    ("null-pattern", with_policy("{repository_id: null}"), "repository_id: patterns must be"),
    ("object-pattern", with_policy("{repository_id: {a: b}}"), "repository_id: patterns must be"),
    ("allow-without-grants", with_policy(ID_CLAIMS, "{}"), "an allow policy must grant something"),
    (
        "allow-grants-missing",
        with_policy(ID_CLAIMS).replace("    grants: {secrets: [registry]}\n", ""),
        "an allow policy must grant something",
    ),
    (
        "bad-effect",
        with_policy(ID_CLAIMS).replace("    claims:", "    effect: Deny\n    claims:"),
        "effect: must be 'allow' or 'deny'",
    ),
    ("empty-name", with_policy(ID_CLAIMS).replace("name: p", 'name: ""'), "name"),
    (
        "installation-without-permissions",
        with_policy(ID_CLAIMS, '{installation: {repositories: "*"}}'),
        "permissions: required",
    ),
    (
        "installation-empty-permissions",
        with_policy(ID_CLAIMS, '{installation: {repositories: "*", permissions: {}}}'),
        "must list at least one permission",
    ),
    (
        "unknown-permission",
        with_policy(ID_CLAIMS, '{installation: {repositories: "*", permissions: {root: read}}}'),
        "root: is not a GitHub App permission",
    ),
    (
        "bad-level",
        with_policy(
            ID_CLAIMS, '{installation: {repositories: "*", permissions: {contents: admin}}}'
        ),
        "contents: takes one of: read, write",
    ),
    (
        "write-only-permission-read",
        with_policy(
            ID_CLAIMS, '{installation: {repositories: "*", permissions: {workflows: read}}}'
        ),
        "workflows: takes one of: write",
    ),
    (
        "installation-without-repositories",
        with_policy(ID_CLAIMS, "{installation: {permissions: {contents: read}}}"),
        "repositories: required",
    ),
    (
        "bad-placeholder",
        with_policy(ID_CLAIMS, '{secrets: ["${repo-name"]}'),
        "invalid placeholder",
    ),
    (
        "bad-runner-action",
        with_policy(ID_CLAIMS, "{runner: {scopes: [a], actions: [delete]}}"),
        "unknown runner action 'delete'",
    ),
    (
        "bad-runner-scope",
        with_policy(ID_CLAIMS, "{runner: {scopes: ['a/b/c']}}"),
        "'a/b/c' is not 'owner/name'",
    ),
    (
        "runner-without-scopes",
        with_policy(ID_CLAIMS, "{runner: {actions: [register]}}"),
        "scopes: required",
    ),
    (
        "policy-not-a-mapping",
        ISSUERS + "policies: [just-a-name]\n",
        "each policy must be a mapping",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [c[1:] for c in POLICY_ERRORS], ids=[c[0] for c in POLICY_ERRORS]
)
def test_policy_errors(tmp_path: Path, text: str, message: str) -> None:
    found = problems(tmp_path, text)
    assert any(message in p for p in found), found
    assert all(p.startswith(f"{tmp_path / 'exchanger.yaml'}:") for p in found)


def test_regression_empty_policy_name_is_an_error_not_a_dropped_deny(tmp_path: Path) -> None:
    text = (
        with_policy(ID_CLAIMS)
        + '  - {name: "", effect: deny, claims: {event_name: pull_request}}\n'
    )
    problem = one_problem(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'exchanger.yaml'}:10: ")
    assert "name" in problem


def test_policy_file_must_hold_a_list(tmp_path: Path) -> None:
    write(tmp_path, "name: p\nclaims: {a: b}\n", "policies.d/p.yaml")
    problem = one_problem(tmp_path, ISSUERS + 'policy_files: ["policies.d/*.yaml"]\n')
    assert (
        problem == f"{tmp_path / 'policies.d' / 'p.yaml'}:1: a policy file holds a list of policies"
    )


def test_policy_file_with_bad_yaml(tmp_path: Path) -> None:
    write(tmp_path, "- name: p\n  claims: {a: [b}\n", "policies.d/p.yaml")
    problem = one_problem(tmp_path, ISSUERS + 'policy_files: ["policies.d/*.yaml"]\n')
    assert problem.startswith(f"{tmp_path / 'policies.d' / 'p.yaml'}:2: invalid YAML")


# --- warnings ---------------------------------------------------------------------------------


def _only(found: list[str], needle: str) -> list[str]:
    return [w for w in found if needle in w]


WARNING_FORMAT = r"^.+:\d+: warning: .+$"


@pytest.mark.parametrize(
    ("claims", "warned"),
    [
        ('{repository: octo-org/app, repository_owner_id: "65"}', []),
        ('{repository: octo-org/app, repository_owner_id: "match:65|66"}', ["repository_id"]),
        ('{repository_owner: octo-org, repository_id: "74"}', ["repository_owner_id"]),
        (
            "{repository: octo-org/app, repository_owner: octo-org}",
            ["repository_id", "repository_owner_id"],
        ),
        ('{repository: octo-org/app, repository_id: "74"}', []),
        ('{repository_owner: octo-org, repository_owner_id: "65"}', []),
        ('{repository_id: "74"}', []),
    ],
    ids=[
        "repository-by-name-owner-pinned-by-id",
        "repository-by-name-owner-id-regex",
        "owner-by-name",
        "both-by-name",
        "repository-with-id",
        "owner-with-id",
        "ids-only",
    ],
)
def test_warns_about_name_only_repository_or_owner(
    tmp_path: Path, claims: str, warned: list[str]
) -> None:
    found = _only(warnings(tmp_path, with_policy(claims)), "by name without")
    assert sorted(w.split("add ")[-1] for w in found) == sorted(warned)
    for warning in found:
        assert warning.startswith(f"{tmp_path / 'exchanger.yaml'}:8: warning: policy 'p' matches")


ANCHOR_CASES: list[tuple[str, str, bool]] = [
    ("repo-owner-literal", "repository: 'match:octo-org/.*'", False),
    ("repo-owner-group", "repository: 'match:(octo-org|octo-labs)/.*'", False),
    ("repo-owner-noncapturing", "repository: 'match:(?:octo-org|octo-labs)/app-.*'", False),
    ("repo-any-owner", "repository: 'match:.*/app'", True),
    ("repo-owner-prefix", "repository: 'match:octo-.*/app'", True),
    ("repo-top-level-alternation", "repository: 'match:octo-org/app|.*'", True),
    ("repo-top-level-alternation-owner", "repository: 'match:octo-org/app|evil.*/x'", True),
    ("repo-alternation-in-group-is-fine", "repository: 'match:octo-org/(app|web)'", False),
    ("repo-branches-each-anchored", "repository: 'match:octo-org/a|octo-labs/b'", False),
    ("repo-caret-dollar", "repository: 'match:^octo-org/.*$'", False),
    ("repo-whole-group-alternation", "repository: 'match:(octo-org/x|.*)'", True),
    ("repo-owner-group-with-regex", "repository: 'match:(octo-org|.*)/x'", True),
    ("repo-empty-branch", "repository: 'match:octo-org/.*|'", True),
    ("owner-literal-alternation", "repository_owner: 'match:octo-org|octo-labs'", False),
    ("owner-prefix", "repository_owner: 'match:octo-.*'", True),
    ("owner-any", "repository_owner: 'match:.*'", True),
    ("exact-never-warns", "repository_owner: 'octo-org'", False),
]


@pytest.mark.parametrize(
    ("rule", "warned"), [c[1:] for c in ANCHOR_CASES], ids=[c[0] for c in ANCHOR_CASES]
)
def test_warns_about_unanchored_owner_or_repository_regex(
    tmp_path: Path, rule: str, warned: bool
) -> None:
    claims = f'{{{rule}, repository_id: "74", repository_owner_id: "65"}}'
    found = _only(warnings(tmp_path, with_policy(claims)), "not anchored to a literal owner")
    assert bool(found) is warned, found


def test_warns_when_several_issuers_and_iss_is_not_pinned(tmp_path: Path) -> None:
    two = ISSUERS + "  - issuer: https://ghes.example/_services/token\n    audiences: [x]\n"
    text = two + textwrap.dedent(
        """\
        policies:
          - name: unpinned
            claims: {repository_owner_id: "65"}
            grants: {secrets: [x]}
          - name: pinned
            claims: {iss: https://ghes.example/_services/token, repository_owner_id: "65"}
            grants: {secrets: [x]}
        """
    )
    found = _only(warnings(tmp_path, text), "does not pin iss")
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'exchanger.yaml'}:8: warning: policy 'unpinned'")
    assert not _only(warnings(tmp_path, with_policy(ID_CLAIMS)), "does not pin iss")


@pytest.mark.parametrize(
    ("text", "warned"),
    [
        (with_policy(ID_CLAIMS, "{runner: {scopes: ['match:Octo-Org/.*']}}"), True),
        (with_policy(ID_CLAIMS, "{runner: {scopes: ['match:octo-org/.*', 'Octo-Org']}}"), False),
        (ISSUERS + "runner_scopes: {allow: ['match:Acme/.*']}\n", True),
        (ISSUERS + "runner_scopes: {deny: ['match:acme/Secret']}\n", True),
        (ISSUERS + "runner_scopes: {allow: ['match:acme/.*', 'Acme']}\n", False),
    ],
    ids=["grant-regex", "grant-lower-regex-and-exact", "guard-allow", "guard-deny", "guard-lower"],
)
def test_warns_about_upper_case_in_match_scopes(tmp_path: Path, text: str, warned: bool) -> None:
    found = _only(warnings(tmp_path, text), "upper-case")
    assert bool(found) is warned, found


def test_upper_case_scope_warning_points_at_the_entry(tmp_path: Path) -> None:
    text = with_policy(
        ID_CLAIMS,
        "\n      runner:\n        scopes:\n          - octo-org\n          - 'match:Octo/.*'",
    )
    found = _only(warnings(tmp_path, text), "upper-case")
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'exchanger.yaml'}:13: warning: ")


def test_warns_about_enterprise_scope_in_app_mode(tmp_path: Path) -> None:
    grants = "{runner: {scopes: ['enterprise:acme', 'octo-org']}}"
    app = with_policy(ID_CLAIMS, grants, extra="github: {app: {id: 1, private_key: {env: K}}}\n")
    found = _only(warnings(tmp_path, app, {"K": PEM}), "enterprise")
    assert len(found) == 1
    assert "'enterprise:acme'" in found[0]
    token = with_policy(ID_CLAIMS, grants, extra="github: {token: {value: t}}\n")
    assert not _only(warnings(tmp_path, token), "enterprise")


def test_warns_about_a_grant_naming_an_unconfigured_secret(tmp_path: Path) -> None:
    found = warnings(
        tmp_path, with_policy(ID_CLAIMS, "{secrets: [registry, regsitry, 'match:npm-.*']}")
    )
    assert len(_only(found, "secret")) == 1
    assert _only(found, "names secret 'regsitry', which is not configured")
    assert found[0].startswith(f"{tmp_path / 'exchanger.yaml'}:9: warning: ")


def test_warns_about_a_glob_matching_nothing(tmp_path: Path) -> None:
    found = warnings(tmp_path, with_policy(ID_CLAIMS) + 'policy_files: ["nothing/*.yaml"]\n')
    assert found == [
        f"{tmp_path / 'exchanger.yaml'}:10: warning: policy_files: 'nothing/*.yaml' matches no file"
    ]


@pytest.mark.parametrize(
    ("audience", "warned"),
    [
        ("https://github.com/octo-org", True),
        ("https://github.com:443/octo-org", True),
        ("https://exchanger.example", False),
        ("https://github.com.example/octo-org", False),
    ],
    ids=["default-audience", "default-audience-with-port", "own-audience", "lookalike-host"],
)
def test_warns_about_githubs_default_audience(tmp_path: Path, audience: str, warned: bool) -> None:
    text = f"issuers:\n  - issuer: https://i.example\n    audiences:\n      - {audience}\n"
    found = _only(warnings(tmp_path, text), "default audience")
    assert bool(found) is warned
    if warned:
        assert found[0].startswith(f"{tmp_path / 'exchanger.yaml'}:4: warning: ")


def test_all_warnings_have_the_file_line_warning_format(tmp_path: Path) -> None:
    text = (
        with_policy(
            "{repository: 'match:.*', repository_owner: x}",
            "{secrets: [nope], runner: {scopes: ['match:A/.*']}}",
            extra="runner_scopes: {allow: ['match:B']}\n",
        )
        + 'policy_files: ["none/*.yaml"]\n'
    )
    found = warnings(tmp_path, text)
    assert len(found) >= 6
    assert all(re.fullmatch(WARNING_FORMAT, w) for w in found), found


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("not a key at all", id="garbage"),
        pytest.param(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----", id="bad-pem"
        ),
        pytest.param(PUBLIC_PEM, id="public-key"),
    ],
)
def test_github_app_key_must_be_an_rsa_private_key(tmp_path: Path, value: str) -> None:
    text = ISSUERS + "github:\n  app:\n    id: 1\n    private_key: {env: K}\n"
    problem = one_problem(tmp_path, text, {"K": value})
    assert problem.startswith(f"{tmp_path / 'exchanger.yaml'}:7: ")
    assert "not an RSA private key" in problem
    assert "AAAA" not in problem


@pytest.mark.parametrize("kind", ["runner", "installation"])
def test_github_grant_without_github_section_is_an_error(tmp_path: Path, kind: str) -> None:
    grants = {
        "runner": "{runner: {scopes: ['${repository}']}}",
        "installation": "{installation: {repositories: '*', permissions: {contents: read}}}",
    }[kind]
    problem = one_problem(tmp_path, with_policy(ID_CLAIMS, grants), environ={})
    assert f"grants.{kind}" in problem
    assert "no `github` section" in problem


def test_installation_grant_in_token_mode_warns(tmp_path: Path) -> None:
    grants = "{installation: {repositories: '*', permissions: {contents: read}}}"
    found = warnings(tmp_path, with_policy(ID_CLAIMS, grants))
    assert any("installation tokens need a GitHub App" in w for w in found), found


def test_redis_url_from_a_secret_source(tmp_path: Path) -> None:
    text = ISSUERS + "state: {redis_url: {env: REDIS_URL}}\n"
    loaded = load(tmp_path, text, {"REDIS_URL": "redis://:pw-canary@redis:6379/0"})
    assert loaded.redis_url is not None
    assert loaded.redis_url.value == "redis://:pw-canary@redis:6379/0"
    assert "pw-canary" not in repr(loaded)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("http://redis:6379", id="not-redis-scheme"),
        pytest.param("{env: MISSING}", id="missing-env"),
    ],
)
def test_bad_redis_url_is_an_error(tmp_path: Path, value: str) -> None:
    problem = one_problem(tmp_path, ISSUERS + f"state: {{redis_url: {value}}}\n", {})
    assert problem.startswith(f"{tmp_path / 'exchanger.yaml'}:4: ")
    assert "redis_url" in problem


def test_issuer_timeout_seconds(tmp_path: Path) -> None:
    text = ISSUERS.replace("audiences:", "timeout_seconds: 2.5\n    audiences:")
    assert load(tmp_path, text).issuers[0].timeout_seconds == 2.5
    assert load(tmp_path, ISSUERS).issuers[0].timeout_seconds == 10.0
    bad = ISSUERS.replace("audiences:", "timeout_seconds: 0\n    audiences:")
    assert "timeout_seconds: must be between 0 and 60" in one_problem(tmp_path, bad)


def test_github_app_pem_key_under_2048_bits_is_refused(tmp_path: Path) -> None:
    small = private_pem(1024)
    text = ISSUERS + "github:\n  app:\n    id: 1\n    private_key: {env: K}\n"
    problem = one_problem(tmp_path, text, {"K": small})
    assert problem.endswith("github.app.private_key: the key has 1024 bits; at least 2048")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        pytest.param("", "needs exactly one key: private_key, kms or pkcs11", id="none"),
        pytest.param(
            "    private_key: {env: K}\n    kms: {key_id: alias/app}\n",
            "needs exactly one key: private_key, kms or pkcs11",
            id="two",
        ),
        pytest.param(
            "    kms: {key_id: alias/app, endpoint_url: 'http://kms.local'}\n",
            "endpoint_url: must be an https:// URL",
            id="kms-plain-http",
        ),
        pytest.param("    kms: {region: eu-west-1}\n", "key_id: required", id="kms-no-key"),
        pytest.param(
            "    pkcs11: {module: /lib/x.so, token_label: t, key_label: k}\n",
            "pin: required",
            id="pkcs11-no-pin",
        ),
        pytest.param(
            "    pkcs11: {module: /lib/x.so, token_label: t, key_label: k, pin: {env: NOPE}}\n",
            "environment variable NOPE is not set",
            id="pkcs11-pin-unset",
        ),
    ],
)
def test_github_app_key_kinds(tmp_path: Path, key: str, message: str) -> None:
    text = ISSUERS + "github:\n  app:\n    id: 1\n" + key
    problem = one_problem(tmp_path, text, {"K": PEM})
    assert message in problem


def test_github_app_kms_and_pkcs11_keys_load_without_contacting_anything(tmp_path: Path) -> None:
    kms = ISSUERS + "github:\n  app:\n    id: 1\n    kms: {key_id: alias/app, region: eu-west-1}\n"
    loaded = load_config(write(tmp_path, kms), environ={})
    assert loaded.github is not None
    assert loaded.github.app is not None
    assert loaded.github.app.key == KmsKey(key_id="alias/app", region="eu-west-1")
    pkcs11 = ISSUERS + (
        "github:\n  app:\n    id: 1\n"
        "    pkcs11: {module: /lib/x.so, token_label: t, key_label: k, pin: {env: PIN}}\n"
    )
    loaded = load_config(write(tmp_path, pkcs11), environ={"PIN": "1234"})
    assert loaded.github is not None
    assert loaded.github.app is not None
    key = loaded.github.app.key
    assert isinstance(key, Pkcs11Key)
    assert (key.module, key.token_label, key.key_label, key.pin.value) == (
        "/lib/x.so",
        "t",
        "k",
        "1234",
    )
    assert "1234" not in repr(loaded)


def test_an_unreadable_config_says_why_in_the_os_words_without_line_0(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as refused:
        load_config(missing, environ={})
    assert refused.value.problems == [f"{missing}: cannot read the file: No such file or directory"]


def test_a_wrong_type_names_what_was_expected_and_found(tmp_path: Path) -> None:
    text = ISSUERS + "server: {max_body_bytes: lots}\n"
    problem = one_problem(tmp_path, text)
    assert problem.endswith("server.max_body_bytes: must be an integer, not a string")


def test_a_common_yaml_mistake_gets_a_hint(tmp_path: Path) -> None:
    text = ISSUERS + "secrets:\n  registry:\n    password: a: b\n"
    problem = one_problem(tmp_path, text)
    assert "invalid YAML: mapping values are not allowed here (a value holding ': '" in problem


def test_an_unreadable_secret_file_says_why(tmp_path: Path) -> None:
    text = ISSUERS + "secrets:\n  registry:\n    password: {file: missing.txt}\n"
    problem = one_problem(tmp_path, text)
    assert problem.endswith("cannot read file missing.txt: No such file or directory")
