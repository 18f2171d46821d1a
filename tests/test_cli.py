"""The command line: check, explain, schema (in-process) and demo (as a subprocess)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from exchanger import cli
from tests.keys import private_pem

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "policies" / "exchanger.yaml"

CONFIG = """\
issuers:
  - issuer: https://token.actions.githubusercontent.com
    audiences: ["https://exchanger.example"]
secrets:
  registry: {username: {value: ci-bot}}
policies:
  - name: registry-from-main
    claims:
      repository_owner_id: "65"
      ref: [refs/heads/main, "match:refs/tags/v[0-9]+"]
    grants:
      secrets: [registry]
      runner: {scopes: ["${repository}"], actions: [register]}
      installation: {repositories: ["${repository}"], permissions: {contents: read}}
  - name: no-pull-requests
    effect: deny
    claims:
      event_name: [pull_request, pull_request_target]
"""
APP_PEM = private_pem()
CLAIMS: dict[str, Any] = {
    "iss": "https://token.actions.githubusercontent.com",
    "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
    "repository": "octo-org/octo-repo",
    "repository_id": "74",
    "repository_owner": "octo-org",
    "repository_owner_id": "65",
    "ref": "refs/heads/main",
    "event_name": "push",
}


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EXCHANGER_CONFIG; a GitHub App from the environment for the GitHub grants."""
    monkeypatch.delenv("EXCHANGER_CONFIG", raising=False)
    monkeypatch.setenv("GITHUB_APP_ID", "12345")
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", APP_PEM)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_config(directory: Path, text: str = CONFIG) -> Path:
    path = directory / "exchanger.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def write_claims(directory: Path, **overrides: Any) -> Path:
    claims = {**CLAIMS, **overrides}
    path = directory / "claims.json"
    path.write_text(json.dumps({k: v for k, v in claims.items() if v is not _MISSING}))
    return path


_MISSING = object()
PROBLEM = re.compile(r"(?P<file>.+):(?P<line>\d+): (?P<message>.+)")
WARNING = re.compile(r".+:\d+: warning: .+")


# --- check ------------------------------------------------------------------------------------


def test_check_ok_prints_a_one_line_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    code, out, err = run(capsys, "check", "--config", str(path))
    assert code == 0
    assert out.splitlines() == [f"{path}: ok: 1 issuer(s), 2 policies, 1 secret(s)"]
    assert err == ""


def test_check_prints_warnings_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = CONFIG.replace('repository_owner_id: "65"', "repository_owner: octo-org") + (
        'policy_files: ["missing/*.yaml"]\n'
    )
    path = write_config(tmp_path, text)
    code, out, err = run(capsys, "check", "--config", str(path))
    assert code == 0
    assert len(out.splitlines()) == 1
    lines = err.splitlines()
    assert len(lines) == 2
    assert all(WARNING.fullmatch(line) for line in lines), lines
    assert lines[0].startswith(f"{path}:9: warning: ")
    assert lines[1].startswith(f"{path}:19: warning: policy_files:")


def test_check_reports_every_problem_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        CONFIG.replace("https://token", "http://token")
        .replace("[refs/heads/main,", '["match:(", refs/heads/main,')
        .replace("contents: read", "contents: sudo")
    )
    path = write_config(tmp_path, text)
    code, out, err = run(capsys, "check", "--config", str(path))
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 3, lines
    found = [PROBLEM.fullmatch(line) for line in lines]
    assert all(found), lines
    assert [(m["file"], int(m["line"])) for m in found if m] == [
        (str(path), 2),
        (str(path), 10),
        (str(path), 14),
    ]


def test_check_reads_exchanger_config_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXCHANGER_CONFIG", str(write_config(tmp_path)))
    code, out, _ = run(capsys, "check")
    assert code == 0
    assert ": ok: " in out


def test_check_of_a_missing_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check", "--config", str(tmp_path / "nope.yaml"))
    assert code == 1
    assert out == ""
    assert str(tmp_path / "nope.yaml") in err


def test_check_never_touches_the_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("check must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    text = (
        CONFIG.replace(
            "https://token.actions.githubusercontent.com",
            "https://issuer.invalid\n    jwks_uri: https://127.0.0.1:9/jwks",
        )
        + "github: {api_url: 'https://ghes.invalid/api/v3'}\n"
    )
    code, out, err = run(capsys, "check", "--config", str(write_config(tmp_path, text)))
    assert (code, err) == (0, "")
    assert ": ok: " in out


def test_check_accepts_the_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check", "--config", str(EXAMPLE))
    assert (code, err) == (0, "")
    assert out.startswith(f"{EXAMPLE}: ok: ")


# --- explain ----------------------------------------------------------------------------------


def explain(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, *request: str, **claims: Any
) -> tuple[int, str, str]:
    return run(
        capsys,
        "explain",
        "--config",
        str(write_config(tmp_path)),
        "--claims",
        str(write_claims(tmp_path, **claims)),
        *request,
    )


def test_explain_secret_allow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = explain(capsys, tmp_path, "--secret", "registry")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "decision: allow"
    assert "deciding policy: registry-from-main" in lines
    assert "policy 'registry-from-main' (allow): matches and covers the request (decides)" in lines
    assert "  ok  repository_owner_id = '65'; wants any of ['65']" in lines
    assert "  ok  ref = 'refs/heads/main'; wants any of " in out
    assert "policy 'no-pull-requests' (deny): claims do not match" in lines
    assert (
        "  no  event_name = 'push'; wants any of ['pull_request', 'pull_request_target']" in lines
    )


def test_explain_secret_deny_names_the_deny_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = explain(capsys, tmp_path, "--secret", "registry", event_name="pull_request")
    assert code == 1
    assert out.splitlines()[0] == "decision: deny"
    assert "deciding policy: no-pull-requests" in out
    assert "  ok  event_name = 'pull_request'" in out


def test_explain_default_deny_shows_the_failing_claim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = explain(
        capsys, tmp_path, "--secret", "registry", ref="refs/heads/dev", repository_owner_id=_MISSING
    )
    assert code == 1
    assert "deciding policy: (none: default deny)" in out
    assert "policy 'registry-from-main' (allow): claims do not match" in out
    assert "  no  ref = 'refs/heads/dev'" in out
    assert "  no  repository_owner_id = <missing or not comparable>" in out


def test_explain_unknown_secret_is_a_deny(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = explain(capsys, tmp_path, "--secret", "nope")
    assert code == 1
    assert "matches but its grants do not cover the request" in out


@pytest.mark.parametrize(
    ("runner", "code"),
    [
        ("register:octo-org/octo-repo", 0),
        ("register:Octo-Org/Octo-Repo", 0),
        ("register", 0),
        ("register:octo-org/other", 1),
        ("remove:octo-org/octo-repo", 1),
        ("fly:octo-org/octo-repo", 2),
        ("register:a/b/c", 2),
    ],
    ids=[
        "own-repo",
        "own-repo-case",
        "default-scope",
        "other-repo",
        "action-not-granted",
        "bad-action",
        "bad-scope",
    ],
)
def test_explain_runner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runner: str, code: int
) -> None:
    got, out, err = explain(capsys, tmp_path, "--runner", runner)
    assert got == code
    if code == 2:
        assert out == ""
        assert err.startswith("exchanger: ")
    else:
        assert out.splitlines()[0] == ("decision: allow" if code == 0 else "decision: deny")
        assert '"scope": "octo-org/' in out


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"permissions":{"contents":"read"}}', 0),
        ("{}", 0),
        ('{"repositories":["octo-repo"]}', 0),
        ('{"permissions":{"contents":"write"}}', 1),
        ('{"repositories":["other"]}', 1),
        ('{"owner":"other-org"}', 1),
        ('{"permissions":{"superpowers":"read"}}', 2),
        ('{"permissions":{"contents":"owner"}}', 2),
        ('{"unknown":1}', 2),
        ("not json", 2),
        ("[1]", 2),
    ],
    ids=[
        "read",
        "defaults",
        "own-repo",
        "write-not-granted",
        "other-repo",
        "other-owner",
        "unknown-permission",
        "bad-level",
        "unknown-field",
        "not-json",
        "not-an-object",
    ],
)
def test_explain_installation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, code: int
) -> None:
    got, out, err = explain(capsys, tmp_path, "--installation", body)
    assert got == code
    if code == 2:
        assert (out, err.startswith("exchanger: ")) == ("", True)
    elif code == 0:
        assert "deciding policy: registry-from-main" in out
        assert '"owner": "octo-org"' in out


def test_explain_with_a_bad_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, CONFIG.replace("effect: deny", "effect: maybe"))
    code, out, err = run(
        capsys, "explain", "--config", str(path), "--claims", str(write_claims(tmp_path)),
        "--secret", "registry",
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert err.startswith(f"{path}:16: ")


@pytest.mark.parametrize(
    "content",
    ["not json", "[1, 2]", None],
    ids=["not-json", "not-an-object", "missing-file"],
)
def test_explain_with_bad_claims_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None
) -> None:
    claims = tmp_path / "claims.json"
    if content is not None:
        claims.write_text(content)
    code, out, err = run(
        capsys, "explain", "--config", str(write_config(tmp_path)), "--claims", str(claims),
        "--secret", "registry",
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert err.startswith("exchanger: ")


def test_explain_needs_exactly_one_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(
            ["explain", "--config", str(write_config(tmp_path)), "--claims",
             str(write_claims(tmp_path)), "--secret", "a", "--runner", "register"]
        )  # fmt: skip
    assert info.value.code == 2


# --- schema -----------------------------------------------------------------------------------


def _schema(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out, err = run(capsys, "schema")
    assert (code, err) == (0, "")
    schema: dict[str, Any] = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _example_with_policy_files() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    for pattern in document.get("policy_files", []):
        for path in sorted(EXAMPLE.parent.glob(pattern)):
            document.setdefault("policies", []).extend(yaml.safe_load(path.read_text()))
    return document


def test_schema_is_valid_json_schema_and_the_example_config_validates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    schema = _schema(capsys)
    document = _example_with_policy_files()
    assert len(document["policies"]) >= 2
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(document))
    assert errors == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(serverr={}),
        lambda d: d["issuers"][0].update(algorithms=["HS256"]),
        lambda d: d["issuers"][0].update(issuer="http://x"),
        lambda d: d["policies"][0].update(claims={}),
        lambda d: d["policies"][0]["grants"].update(installation={"repositories": "*"}),
        lambda d: d["policies"][0]["grants"].update(
            installation={"permissions": {"contents": "read"}}
        ),
        lambda d: d["policies"][0]["grants"].update(
            installation={"repositories": "*", "permissions": {"contents": "owner"}}
        ),
        lambda d: d["policies"][0].update(effect="maybe"),
        lambda d: d["secrets"]["registry"].update(password={"value": "a", "env": "B"}),
    ],
    ids=[
        "unknown-key",
        "hmac",
        "http-issuer",
        "empty-claims",
        "no-permissions",
        "no-repositories",
        "bad-level",
        "bad-effect",
        "two-sources",
    ],
)
def test_schema_rejects_what_the_loader_rejects(
    capsys: pytest.CaptureFixture[str], mutate: Any
) -> None:
    schema = _schema(capsys)
    document = _example_with_policy_files()
    mutate(document)
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(document))


# --- demo -------------------------------------------------------------------------------------


def test_demo_runs_an_exchange_and_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exchanger", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exchange succeeded" in result.stdout + result.stderr
    assert "INSECURE" in result.stderr


# --- check --strict ---------------------------------------------------------------------------


def test_check_strict_fails_on_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = CONFIG.replace('repository_owner_id: "65"', "repository_owner: octo-org")
    path = write_config(tmp_path, text)
    code, out, err = run(capsys, "check", "--config", str(path), "--strict")
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert len(lines) == 2, lines
    assert WARNING.fullmatch(lines[0])
    assert lines[0].startswith(f"{path}:9: warning: ")
    assert lines[1] == f"{path}: 1 warning; --strict fails on warnings"
    code, out, _ = run(capsys, "check", "--config", str(path))
    assert code == 0
    assert ": ok: " in out


def test_check_strict_passes_a_config_without_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    code, out, err = run(capsys, "check", "--config", str(path), "--strict")
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"{path}: ok: 1 issuer(s), 2 policies, 1 secret(s)"]


def test_check_strict_accepts_the_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check", "--config", str(EXAMPLE), "--strict")
    assert (code, err) == (0, "")
    assert out.startswith(f"{EXAMPLE}: ok: ")


@pytest.mark.parametrize("strict", [[], ["--strict"]], ids=["plain", "strict"])
def test_check_prints_warnings_even_when_there_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], strict: list[str]
) -> None:
    text = CONFIG.replace('repository_owner_id: "65"', "repository_owner: octo-org").replace(
        "event_name: [pull_request", "event_nmae: [pull_request"
    )
    path = write_config(tmp_path, text)
    code, out, err = run(capsys, "check", "--config", str(path), *strict)
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines == [
        f"{path}:18: policy 'no-pull-requests'.claims.event_nmae: unknown claim: not in the "
        "claims of issuer https://token.actions.githubusercontent.com; did you mean event_name?",
        f"{path}:9: warning: policy 'registry-from-main' matches repository_owner by name "
        "without repository_owner_id; names can be renamed and re-registered, ids cannot: "
        "add repository_owner_id",
    ]


def test_check_refuses_a_world_open_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, CONFIG.replace('      repository_owner_id: "65"\n', ""))
    code, out, err = run(capsys, "check", "--config", str(path))
    assert (code, out) == (1, "")
    [line] = err.splitlines()
    assert line.startswith(f"{path}:8: policy 'registry-from-main' has no identity anchor: ")


def test_check_online_accepts_a_pem_app_key_without_a_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "check", "--online", "--config", str(write_config(tmp_path)))
    assert (code, err) == (0, "")
    assert ": ok: " in out
