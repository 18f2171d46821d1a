"""`actions/github-script` steps, run by node with the real `@actions/core` from npm.

`core.getIDToken` asks the stand-in Actions runtime for an ID token, the script
`fetch`es the gateway (over TLS from the test CA, via NODE_EXTRA_CA_CERTS), masks the
credential with `core.setSecret` (`::add-mask::` on stdout) and sets a step output
(written to the GITHUB_OUTPUT file). The registry-password and installation-token
steps are the README's own blocks, read from README.md by the driver.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.conftest import (
    NODE_DIR,
    README,
    README_AUDIENCE,
    base_env,
    require_actions_core,
    require_command,
)
from tests.fakes.actions_runtime import ActionsRuntime, TokenRequest
from tests.fakes.github import FakeGitHub
from tests.fakes.tls import TestCA
from tests.gateway import INSTALLATION_ID, REGISTRY_PASSWORD, Gateway

DRIVER = NODE_DIR / "github-script.mjs"
MASK = "::add-mask::"
#: The README's github-script examples, by marker name; each one has a test below.
README_STEPS = {"registry-password", "installation-token", "revoke-token"}


@dataclass(frozen=True)
class Step:
    """What a github-script step left behind."""

    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]

    @property
    def masks(self) -> list[str]:
        """Every value passed to core.setSecret, in order."""
        return [
            line.removeprefix(MASK) for line in self.stdout.splitlines() if line.startswith(MASK)
        ]

    def assert_never_shown(self, secret: str) -> None:
        """`secret` reached the log only to be masked."""
        shown = [
            line for line in self.stdout.splitlines() if secret in line and line != MASK + secret
        ]
        assert shown == [], "a credential reached the step's log unmasked"
        assert secret not in self.stderr, "a credential reached the step's stderr"


def parse_outputs(text: str) -> dict[str, str]:
    """The GITHUB_OUTPUT file: `name=value` lines and `name<<DELIMITER` heredocs."""
    outputs: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line:
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            outputs[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
        elif line:
            name, value = line.split("=", 1)
            outputs[name] = value
            i += 1
        else:
            i += 1
    return outputs


def run_step(
    source: list[str],
    *,
    gateway: Gateway,
    runtime: ActionsRuntime,
    ca: TestCA,
    tmp_path: Path,
    request_token: str | None = None,
    step_env: dict[str, str] | None = None,
) -> Step:
    """Run a script with `node github-script.mjs SOURCE…` as a job with id-token: write."""
    require_actions_core()
    node = require_command("node")
    github_output = tmp_path / "github_output"
    github_output.write_text("", encoding="utf-8")  # the runner creates it empty
    env = base_env(
        EXCHANGER_URL=gateway.url,
        NODE_EXTRA_CA_CERTS=str(ca.ca_file),
        GITHUB_OUTPUT=str(github_output),
        **runtime.env(),
    )
    if request_token is not None:
        env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = request_token
    env.update(step_env or {})  # the step's own `env:`
    result = subprocess.run(
        [node, str(DRIVER), *source],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    outputs = parse_outputs(github_output.read_text(encoding="utf-8"))
    return Step(result.returncode, result.stdout, result.stderr, outputs)


def readme(name: str) -> list[str]:
    return ["readme", str(README), name]


def the_one_id_token(runtime: ActionsRuntime) -> str:
    """The step asked for exactly one ID token, the way @actions/core does, for the README's
    audience; the token it was given."""
    [request] = runtime.requests
    assert request == TokenRequest(
        authorized=True,
        audience=README_AUDIENCE,
        api_version="2.0",
        user_agent="actions/oidc-client",
        accept="application/json",
        issued=request.issued,
    )
    assert request.issued is not None
    return request.issued


def test_readme_registry_password_step(
    e2e_gateway: Gateway, actions_runtime: ActionsRuntime, ca: TestCA, tmp_path: Path
) -> None:
    step = run_step(
        readme("registry-password"),
        gateway=e2e_gateway,
        runtime=actions_runtime,
        ca=ca,
        tmp_path=tmp_path,
    )
    assert step.returncode == 0, step.stdout + step.stderr
    id_token = the_one_id_token(actions_runtime)
    assert step.outputs == {"password": REGISTRY_PASSWORD}
    # getIDToken masks the ID token itself; the script masks the password before its output.
    assert step.masks == [id_token, REGISTRY_PASSWORD]
    step.assert_never_shown(REGISTRY_PASSWORD)
    step.assert_never_shown(id_token)


def test_readme_installation_token_step(
    e2e_gateway: Gateway,
    actions_runtime: ActionsRuntime,
    github: FakeGitHub,
    ca: TestCA,
    tmp_path: Path,
) -> None:
    step = run_step(
        readme("installation-token"),
        gateway=e2e_gateway,
        runtime=actions_runtime,
        ca=ca,
        tmp_path=tmp_path,
    )
    assert step.returncode == 0, step.stdout + step.stderr
    id_token = the_one_id_token(actions_runtime)
    token = step.outputs.pop("token")
    assert step.outputs == {}
    assert step.masks == [id_token, token]
    step.assert_never_shown(token)
    # What GitHub minted: the README's request ({repositories: ['docs'], contents: write}).
    assert github.describe_token(token) == {
        "installation_id": INSTALLATION_ID,
        "repositories": ["docs"],
        "permissions": {"contents": "write"},
    }
    assert github.token_is_active(token)


def test_readme_revocation_step_revokes_the_installation_token(
    e2e_gateway: Gateway,
    actions_runtime: ActionsRuntime,
    github: FakeGitHub,
    ca: TestCA,
    tmp_path: Path,
) -> None:
    minted = run_step(
        readme("installation-token"),
        gateway=e2e_gateway,
        runtime=actions_runtime,
        ca=ca,
        tmp_path=tmp_path,
    )
    token = minted.outputs["token"]
    assert github.token_is_active(token)
    step = run_step(
        readme("revoke-token"),
        gateway=e2e_gateway,
        runtime=actions_runtime,
        ca=ca,
        tmp_path=tmp_path,
        step_env={"APP_TOKEN": token},
    )
    assert step.returncode == 0, step.stdout + step.stderr
    assert "::warning::" not in step.stdout
    assert not github.token_is_active(token)
    assert github.revocations == [token]
    step.assert_never_shown(token)


def test_jitconfig_step(
    e2e_gateway: Gateway,
    actions_runtime: ActionsRuntime,
    github: FakeGitHub,
    ca: TestCA,
    tmp_path: Path,
) -> None:
    step = run_step(
        ["file", str(NODE_DIR / "jitconfig.js")],
        gateway=e2e_gateway,
        runtime=actions_runtime,
        ca=ca,
        tmp_path=tmp_path,
    )
    assert step.returncode == 0, step.stdout + step.stderr
    id_token = the_one_id_token(actions_runtime)
    config = step.outputs["jitconfig"]
    assert step.masks == [id_token, config]
    step.assert_never_shown(config)
    created = github.runners[-1]
    assert created["scope"] == "repo:octo-org/octo-repo"
    assert created["runner"]["name"] == step.outputs["runner-name"]
    assert [label["name"] for label in created["runner"]["labels"]] == ["self-hosted", "linux"]
    assert config in github.minted_secrets()


def test_readme_step_fails_cleanly_when_the_policy_denies(
    e2e_gateway: Gateway, actions_runtime: ActionsRuntime, ca: TestCA, tmp_path: Path
) -> None:
    """A pull request's branch is not main: the README's failure branch runs."""
    actions_runtime.claims = {"ref": "refs/heads/feature", "event_name": "push"}
    step = run_step(
        readme("registry-password"),
        gateway=e2e_gateway,
        runtime=actions_runtime,
        ca=ca,
        tmp_path=tmp_path,
    )
    assert step.returncode == 1
    # The failure names the request id, so the job log leads to the gateway's audit line.
    assert re.search(r"::error::exchanger answered 403 \(request [0-9a-f]{32}\): ", step.stdout)
    assert '"access_denied"' in step.stdout
    assert step.outputs == {}
    assert REGISTRY_PASSWORD not in step.stdout + step.stderr


def test_step_fails_without_the_runtime_request_token(
    e2e_gateway: Gateway,
    actions_runtime: ActionsRuntime,
    ca: TestCA,
    tmp_path: Path,
) -> None:
    """The stand-in checks the bearer request token; @actions/core reports its refusal."""
    step = run_step(
        readme("registry-password"),
        gateway=e2e_gateway,
        runtime=actions_runtime,
        ca=ca,
        tmp_path=tmp_path,
        request_token="not-the-request-token",
    )
    assert step.returncode == 1
    assert "::error::Unhandled error: Error: Error message: Failed to get ID Token." in step.stdout
    assert [r.authorized for r in actions_runtime.requests] == [False]
    assert step.outputs == {}


def test_every_readme_github_script_example_is_run_by_these_tests() -> None:
    """A github-script block in README.md without an `<!-- e2e: NAME -->` marker, or with
    a name no test runs, would be documentation nobody executes."""
    lines = README.read_text(encoding="utf-8").splitlines()
    fences = [i for i, line in enumerate(lines) if line.lstrip().startswith("```")]
    marked: list[str] = []
    for start, end in zip(fences[::2], fences[1::2], strict=False):
        if not any("uses: actions/github-script" in line for line in lines[start:end]):
            continue
        marker = re.fullmatch(r"<!-- e2e: (\S+) -->", lines[start - 1].strip())
        assert marker, f"README.md:{start + 1}: a github-script example without an e2e marker"
        marked.append(marker.group(1))
    assert sorted(marked) == sorted(README_STEPS)
