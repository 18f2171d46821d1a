"""Dry runs: `explain` with every field the HTTP API takes, and `exchanger test` case files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from exchanger import cli

REPO = Path(__file__).resolve().parents[2]

CONFIG = """\
issuers:
  - issuer: https://token.actions.githubusercontent.com
    audiences: ["https://exchanger.example"]
github:
  token: {value: not-a-real-token}
runner_scopes:
  deny: [acme]
secrets:
  registry: {username: {value: ci-bot}}
policies:
  - name: acme-runners
    claims: {repository_owner_id: "65"}
    grants:
      runner:
        scopes: [acme, octo-org]
        runner_groups: [ci]
        labels: [linux, gpu]
      secrets: [registry]
"""
CLAIMS = {
    "iss": "https://token.actions.githubusercontent.com",
    "repository": "octo-org/octo-repo",
    "repository_id": "74",
    "repository_owner": "octo-org",
    "repository_owner_id": "65",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "exchanger.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    (tmp_path / "claims.json").write_text(json.dumps(CLAIMS), encoding="utf-8")
    return path


def explain(capsys: pytest.CaptureFixture[str], config: Path, *request: str) -> tuple[int, str]:
    claims = config.parent / "claims.json"
    code, out, err = run(
        capsys, "explain", "--config", str(config), "--claims", str(claims), *request
    )
    assert err == ""
    return code, out


def test_regression_explain_applies_the_runner_scope_guard(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, out = explain(capsys, config, "--runner", "jitconfig:acme")
    assert code == 1
    assert out.splitlines()[0] == "decision: deny"
    assert "decided by: runner_scopes: runner_scopes does not permit 'acme'" in out


@pytest.mark.parametrize(
    ("body", "code", "line"),
    [
        pytest.param(
            {"scope": "octo-org", "labels": ["GPU"], "runner_group": "ci", "name": "r1"},
            0,
            "decided by: a policy: policy 'acme-runners' covers it",
            id="all-fields",
        ),
        pytest.param(
            {"scope": "octo-org", "runner_group": "other"},
            1,
            "matches but its grants do not cover the request: runner group 'other' is not granted",
            id="group-not-granted",
        ),
        pytest.param(
            {"scope": "octo-org", "labels": ["linux", "arm64"]},
            1,
            "labels ['arm64'] are not granted",
            id="label-not-granted",
        ),
    ],
)
def test_explain_takes_every_jitconfig_field(
    capsys: pytest.CaptureFixture[str], config: Path, body: dict[str, object], code: int, line: str
) -> None:
    got, out = explain(capsys, config, "--jitconfig", json.dumps(body))
    assert got == code
    assert line in out


def test_explain_refuses_an_invalid_jitconfig_body_as_the_server_would(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    claims = config.parent / "claims.json"
    code, out, err = run(
        capsys, "explain", "--config", str(config), "--claims", str(claims),
        "--jitconfig", '{"scope": "octo-org", "name": "\\ud800"}',
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert "not valid Unicode" in err


def test_explain_installation_in_token_mode_is_a_mode_refusal(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, out = explain(capsys, config, "--installation", "{}")
    assert code == 1
    assert (
        "decided by: the GitHub mode (answered 400): installation tokens need a GitHub App" in out
    )


def test_explain_secret_field(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert explain(capsys, config, "--secret", "registry/username")[0] == 0
    code, out = explain(capsys, config, "--secret", "registry/password")
    assert code == 1
    assert "no secret 'registry' with that field is configured" in out


# --- exchanger test ----------------------------------------------------------------------


CASES = """\
claims: {repository_owner_id: "65", repository: octo-org/octo-repo}
cases:
  - name: org runners with a granted label
    request: {jitconfig: {scope: octo-org, labels: [linux]}}
    expect: allow
    policy: acme-runners
  - name: acme is guarded
    request: {runner: "register:acme"}
    expect: allow
  - name: another owner
    claims: {repository_owner_id: "66"}
    request: {secret: registry}
    expect: allow
  - name: wrong policy named
    request: {secret: registry}
    expect: allow
    policy: someone-else
  - name: bad request
    request: {jitconfig: {scope: "a/b/c"}}
    expect: deny
"""


def test_exchanger_test_reports_each_failing_case_and_a_summary(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    cases = config.parent / "cases.yaml"
    cases.write_text(CASES, encoding="utf-8")
    code, out, err = run(capsys, "test", "--config", str(config), str(cases))
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert lines[-1] == "1 passed, 4 failed"
    assert lines[0] == (
        f"{cases}:7: acme is guarded: expected allow, got deny: "
        "runner_scopes does not permit 'acme'"
    )
    assert lines[1] == (
        f"{cases}:10: another owner: expected allow, got deny: no allow policy covers it; "
        "'acme-runners': claim repository_owner_id is '66'"
    )
    assert lines[2] == (
        f"{cases}:14: wrong policy named: expected policy 'someone-else' to decide, "
        "but acme-runners did (policy 'acme-runners' covers it)"
    )
    assert lines[3].startswith(f"{cases}:18: bad request: the request is invalid (400): scope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("- a\n", ":1: a case file is a mapping with a `cases` list", id="not-a-map"),
        pytest.param(
            "cases:\n  - {name: x, request: {secret: a}, expect: maybe}\n",
            ":2: expect must be allow or deny",
            id="bad-expect",
        ),
        pytest.param(
            "cases:\n  - {name: x, request: {fly: a}, expect: deny}\n",
            ":2: request must be one of secret, runner, jitconfig, installation",
            id="bad-request-kind",
        ),
        pytest.param(
            "cases:\n  - {name: x, request: {secret: a}, expect: deny, extra: 1}\n",
            ":2: unknown key 'extra'",
            id="unknown-key",
        ),
        pytest.param("cases: [\n", "cannot read the case file", id="bad-yaml"),
    ],
)
def test_exchanger_test_refuses_a_bad_case_file_with_exit_2(
    capsys: pytest.CaptureFixture[str], config: Path, text: str, message: str
) -> None:
    cases = config.parent / "cases.yaml"
    cases.write_text(textwrap.dedent(text), encoding="utf-8")
    code, out, err = run(capsys, "test", "--config", str(config), str(cases))
    assert (code, out) == (2, "")
    assert message in err


def test_shipped_policy_cases_pass(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "test",
        "--config",
        str(REPO / "policies" / "exchanger.yaml"),
        str(REPO / "policies" / "exchanger.test.yaml"),
    )
    assert (code, err) == (0, "")
    assert out.splitlines()[-1].endswith(" passed, 0 failed")


def test_shipped_config_passes_check_strict(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "check", "--strict", "--config", str(REPO / "policies" / "exchanger.yaml")
    )
    assert (code, err) == (0, "")


def test_explain_takes_a_token_exchange_form(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, out = explain(
        capsys, config, "--token-exchange", "resource=urn:exchanger:secret:registry/username"
    )
    assert code == 0
    assert 'request: {"field": "username", "secret": "registry"}' in out
    code, out = explain(capsys, config, "--token-exchange", "audience=https://github.com/octo-org")
    assert code == 1
    assert "the GitHub mode (answered 400)" in out
