"""The runner bootstrap scripts in examples/, run by bash against the gateway and the
fake GitHub, in a runner directory whose `run.sh` and `config.sh` are stubs that record
how they were called. curl trusts the test CA through CURL_CA_BUNDLE."""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import README_AUDIENCE, REPO_ROOT, base_env, require_command
from tests.fakes.actions_runtime import ActionsRuntime
from tests.fakes.github import FakeGitHub
from tests.fakes.issuer import FakeIssuer
from tests.fakes.tls import TestCA
from tests.gateway import Gateway

EXAMPLES = REPO_ROOT / "examples"
RUNNER_TOKEN = re.compile(r"[A-Z0-9]{29}")  # GitHub's runner registration/removal tokens
RUNNER_TOKEN_CALL = re.compile(r"/actions/runners/(registration|remove)-token$")

#: run.sh and config.sh: append [name, cwd, *args] as a JSON line to $STUB_RECORD; then,
#: for NAME (RUN or CONFIG), write $STUB_NAME_WRITES ({path: text}) and exit with
#: $STUB_NAME_EXIT (default 0).
STUB = """\
#!/usr/bin/env python3
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["STUB_RECORD"], "a", encoding="utf-8") as out:
    out.write(json.dumps([name, os.getcwd(), *sys.argv[1:]]) + "\\n")
prefix = "STUB_" + name.split(".")[0].upper()
for path, text in json.loads(os.environ.get(prefix + "_WRITES", "{}")).items():
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)
sys.exit(int(os.environ.get(prefix + "_EXIT", "0")))
"""

#: A `curl` first on PATH: records its arguments (JSON lines in $CURL_RECORD), then runs
#: the real one, so a test can tell whether a credential was ever on a command line.
CURL_SHIM = """\
#!/usr/bin/env python3
import json, os, sys
with open(os.environ["CURL_RECORD"], "a", encoding="utf-8") as out:
    out.write(json.dumps(sys.argv[1:]) + "\\n")
os.execv(os.environ["REAL_CURL"], [os.environ["REAL_CURL"], *sys.argv[1:]])
"""


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    calls: list[list[str]]  # [name, cwd, *args] per stub call, in order
    curl_argv: list[list[str]]  # the arguments of every curl the script ran

    def assert_not_on_a_curl_command_line(self, *credentials: str) -> None:
        for argv in self.curl_argv:
            for credential in credentials:
                assert not any(credential in arg for arg in argv), (
                    "a credential was on curl's command line, where `ps` shows it"
                )


@pytest.fixture
def runner_dir(tmp_path: Path) -> Path:
    """An unpacked-runner stand-in: stub run.sh and config.sh."""
    directory = tmp_path / "actions-runner"
    directory.mkdir()
    for name in ("run.sh", "config.sh"):
        (directory / name).write_text(STUB, encoding="utf-8")
        (directory / name).chmod(0o755)
    return directory


def _records(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_script(script: str, runner_dir: Path, gateway: Gateway, ca: TestCA, **env: str) -> Run:
    bash = require_command("bash")
    real_curl = require_command("curl")
    require_command("python3")
    work = runner_dir.parent
    shim_dir = work / "shim"
    shim_dir.mkdir(exist_ok=True)
    (shim_dir / "curl").write_text(CURL_SHIM, encoding="utf-8")
    (shim_dir / "curl").chmod(0o755)
    record, curl_record = work / "calls.jsonl", work / "curl.jsonl"
    record.write_text("", encoding="utf-8")
    curl_record.write_text("", encoding="utf-8")
    environment = base_env(
        EXCHANGER_URL=gateway.url,
        CURL_CA_BUNDLE=str(ca.ca_file),
        STUB_RECORD=str(record),
        CURL_RECORD=str(curl_record),
        REAL_CURL=real_curl,
        **env,
    )
    environment["PATH"] = f"{shim_dir}:{environment.get('PATH', '/usr/bin:/bin')}"
    result = subprocess.run(
        [bash, str(EXAMPLES / script)],
        cwd=runner_dir,  # run from the runner directory, as the scripts say
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Run(
        result.returncode, result.stdout, result.stderr, _records(record), _records(curl_record)
    )


def new_secrets(github: FakeGitHub, before: list[str]) -> list[str]:
    """Credentials the fake GitHub handed out since `before` was taken, oldest first."""
    minted = github.minted_secrets()
    assert minted[: len(before)] == before
    return minted[len(before) :]


def decode_jit_config(encoded: str) -> dict[str, object]:
    """The `.runner` file inside a JIT config (base64 JSON of base64 runner files)."""
    outer = json.loads(base64.b64decode(encoded))
    runner: dict[str, object] = json.loads(base64.b64decode(outer[".runner"]))
    return runner


@pytest.mark.parametrize("source", ["ID_TOKEN", "ID_TOKEN_FILE", "actions-runtime"])
def test_runner_jit_starts_run_sh_with_the_minted_config(
    source: str,
    e2e_gateway: Gateway,
    github: FakeGitHub,
    issuer: FakeIssuer,
    actions_runtime: ActionsRuntime,
    ca: TestCA,
    runner_dir: Path,
) -> None:
    id_token = issuer.mint(aud=README_AUDIENCE)
    if source == "ID_TOKEN":
        env = {"ID_TOKEN": id_token}
    elif source == "ID_TOKEN_FILE":
        token_file = runner_dir.parent / "token"
        token_file.write_text(id_token + "\r\n", encoding="utf-8")
        env = {"ID_TOKEN_FILE": str(token_file)}
    else:  # inside a GitHub Actions job: ask the runtime, with EXCHANGER_AUDIENCE
        env = {**actions_runtime.env(), "EXCHANGER_AUDIENCE": README_AUDIENCE}
    name = f"e2e-jit-{secrets.token_hex(4)}"  # JIT runner names are unique per scope
    before = github.minted_secrets()

    run = run_script(
        "runner-jit.sh", runner_dir, e2e_gateway, ca,
        RUNNER_LABELS="linux, x64", RUNNER_NAME=name, **env,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    [config] = [s for s in new_secrets(github, before) if not s.startswith("ghs_")]
    assert run.calls == [["run.sh", str(runner_dir), "--jitconfig", config]]
    assert decode_jit_config(config)["AgentName"] == name
    assert run.stdout == f"starting ephemeral runner {name}\n"
    [jit] = [r for r in github.requests if r.path.endswith("/generate-jitconfig")]
    assert jit.path == "/repos/octo-org/octo-repo/actions/runners/generate-jitconfig"
    assert jit.json == {
        "name": name, "runner_group_id": 1, "labels": ["linux", "x64"], "work_folder": "_work"
    }  # fmt: skip
    if source == "actions-runtime":
        [request] = actions_runtime.requests
        assert (request.authorized, request.audience, request.api_version) == (
            True, README_AUDIENCE, "2.0",
        )  # fmt: skip
        assert request.issued is not None
        id_token = request.issued
    run.assert_not_on_a_curl_command_line(id_token, actions_runtime.request_token)
    assert config not in run.stderr


def test_runner_jit_without_an_identity_token_asks_nobody(
    e2e_gateway: Gateway, github: FakeGitHub, ca: TestCA, runner_dir: Path
) -> None:
    run = run_script("runner-jit.sh", runner_dir, e2e_gateway, ca)
    assert run.returncode != 0
    assert "no identity token: set ID_TOKEN or ID_TOKEN_FILE" in run.stderr
    assert run.curl_argv == []  # not even a request with an empty bearer token
    assert run.calls == []
    assert github.requests == []


def test_runner_register_configures_runs_and_removes(
    e2e_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, ca: TestCA, runner_dir: Path
) -> None:
    id_token = issuer.mint(aud=README_AUDIENCE)
    token_file = runner_dir.parent / "token"
    token_file.write_text(id_token + "\n", encoding="utf-8")
    before = github.minted_secrets()

    run = run_script(
        "runner-register.sh", runner_dir, e2e_gateway, ca,
        ID_TOKEN_FILE=str(token_file), RUNNER_SCOPE="octo-org/octo-repo",
        RUNNER_NAME="e2e-long-lived", RUNNER_LABELS="linux,x64",
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    register, remove = [s for s in new_secrets(github, before) if RUNNER_TOKEN.fullmatch(s)]
    cwd = str(runner_dir)
    assert run.calls == [
        ["config.sh", cwd, "--unattended", "--replace",
         "--url", "https://github.com/octo-org/octo-repo", "--token", register,
         "--name", "e2e-long-lived", "--labels", "linux,x64"],
        ["run.sh", cwd],
        ["config.sh", cwd, "remove", "--token", remove],
    ]  # fmt: skip
    assert [r.path for r in github.requests if RUNNER_TOKEN_CALL.search(r.path)] == [
        "/repos/octo-org/octo-repo/actions/runners/registration-token",
        "/repos/octo-org/octo-repo/actions/runners/remove-token",
    ]
    run.assert_not_on_a_curl_command_line(id_token)
    assert run.stderr == ""


def test_runner_register_removes_the_runner_when_run_sh_fails(
    e2e_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, ca: TestCA, runner_dir: Path
) -> None:
    id_token = issuer.mint(aud=README_AUDIENCE)
    before = github.minted_secrets()

    run = run_script(
        "runner-register.sh", runner_dir, e2e_gateway, ca,
        ID_TOKEN=id_token, RUNNER_SCOPE="octo-org", GITHUB_URL="https://ghes.example.com",
        STUB_RUN_EXIT="3",
    )  # fmt: skip

    assert run.returncode == 3, run.stderr  # run.sh's status, after the removal
    register, remove = [s for s in new_secrets(github, before) if RUNNER_TOKEN.fullmatch(s)]
    cwd = str(runner_dir)
    assert run.calls == [
        ["config.sh", cwd, "--unattended", "--replace",
         "--url", "https://ghes.example.com/octo-org", "--token", register],
        ["run.sh", cwd],
        ["config.sh", cwd, "remove", "--token", remove],
    ]  # fmt: skip
    assert [r.path for r in github.requests if RUNNER_TOKEN_CALL.search(r.path)] == [
        "/orgs/octo-org/actions/runners/registration-token",
        "/orgs/octo-org/actions/runners/remove-token",
    ]
    run.assert_not_on_a_curl_command_line(id_token)


def test_runner_register_never_calls_config_sh_remove_without_a_token(
    e2e_gateway: Gateway, github: FakeGitHub, issuer: FakeIssuer, ca: TestCA, runner_dir: Path
) -> None:
    """The identity token expires while the runner runs (its file now holds an expired
    one): the gateway refuses the removal token, and config.sh is not asked to remove
    the runner with an empty --token."""
    now = int(time.time())
    expired = issuer.mint(aud=README_AUDIENCE, iat=now - 900, nbf=now - 900, exp=now - 600)
    token_file = runner_dir.parent / "token"
    token_file.write_text(issuer.mint(aud=README_AUDIENCE), encoding="utf-8")
    before = github.minted_secrets()

    run = run_script(
        "runner-register.sh", runner_dir, e2e_gateway, ca,
        ID_TOKEN_FILE=str(token_file), RUNNER_SCOPE="octo-org/octo-repo",
        STUB_RUN_WRITES=json.dumps({str(token_file): expired}),
    )  # fmt: skip

    assert run.returncode == 0, run.stderr  # run.sh's status
    [register] = [s for s in new_secrets(github, before) if RUNNER_TOKEN.fullmatch(s)]
    cwd = str(runner_dir)
    assert run.calls == [
        ["config.sh", cwd, "--unattended", "--replace",
         "--url", "https://github.com/octo-org/octo-repo", "--token", register],
        ["run.sh", cwd],
    ]  # fmt: skip
    assert "401" in run.stderr
    assert "runner removal failed" in run.stderr
