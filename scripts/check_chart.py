"""Lint, render and validate the Helm chart; called by scripts/check-deploy.sh.

For every values file in charts/exchanger/ci/, and the values examples marked
in the READMEs: `helm lint --strict`, then `helm template`, then
- every manifest is validated with kubernetes-validate (strict: unknown
  fields are errors) against the oldest Kubernetes the chart supports and the
  newest the installed kubernetes-validate knows; the ServiceMonitor is a CRD
  that kubernetes-validate has no schema for, so its few fields are checked
  here by hand;
- the security properties hold for every pod (non-root, read-only root,
  no privilege escalation, all capabilities dropped, RuntimeDefault seccomp,
  no service-account token), and no Secret is ever rendered;
- the ConfigMap holds exactly `config` (+ policy_files, + state) and
  `policies` from the values, valid against `exchanger schema`, and accepted
  by `exchanger check` with stand-in credentials;
- every {env: NAME} source is set in the container and every {file: …} under
  /var/run/secrets/exchanger has a credentials volume; the ConfigMap holds no
  {value: …} source and no Redis password;
- the NetworkPolicy, when rendered, lets out DNS, 443 and the configured
  Redis port, and neither it, the Service nor the PDB selects the test pod.
Then: the defaults alone refuse to render (no audience) but, given one,
render a NetworkPolicy (DNS and 443 out); every {value: …} source under
config (secrets, github.token, the App key, the PKCS#11 pin, redis_url) and
a Redis URL carrying a password are refused with a message naming the key
and pointing at existingSecret/secretEnv (never echoing the credential),
while the same config with {file: …}/{env: …} renders and passes every check
above; and the checksum/config annotation changes with the config and the
policies but not with, e.g., the replica count.

Exit 1 with a list of FAIL lines if anything is wrong.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the work tree's exchanger, as `-m exchanger` from ROOT uses
CHART = ROOT / "charts" / "exchanger"
SECRET_DIR = "/var/run/secrets/exchanger/"  # noqa: S105 - a directory, not a password
CONFIG_DIR = "/etc/exchanger"
OLDEST_KUBERNETES = "1.25.0"  # Chart.yaml kubeVersion
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

failures: list[str] = []


def fail(case: str, message: str) -> None:
    failures.append(f"{case}: {message}")
    print(f"FAIL {case}: {message}", file=sys.stderr)


def expect(condition: object, case: str, message: str) -> bool:
    if not condition:
        fail(case, message)
    return bool(condition)


class Helm:
    def __init__(self, binary: Path) -> None:
        self.binary = str(binary)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our helm, our arguments
            [self.binary, *args], capture_output=True, text=True, check=False, timeout=120
        )

    def lint(self, values: Path) -> subprocess.CompletedProcess[str]:
        return self.run("lint", "--strict", str(CHART), "-f", str(values))

    def template(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("template", "ex", str(CHART), "--namespace", "gw", *args)


def documents(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str, case: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    expect(len(found) == 1, case, f"expected one {kind}, rendered {len(found)}")
    return found[0] if found else {}


# --- Kubernetes schemas ---------------------------------------------------


def validate_manifests(docs: list[dict[str, Any]], case: str, versions: list[str]) -> None:
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if (doc.get("apiVersion"), doc.get("kind")) in CRDS:
            check_service_monitor(doc, case)
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                fail(case, f"{name} invalid for Kubernetes {version}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                fail(case, f"{name}: no schema in Kubernetes {version}")


def check_service_monitor(doc: dict[str, Any], case: str) -> None:
    """The Prometheus Operator CRD: no schema to validate against, so by hand."""
    spec = doc.get("spec", {})
    expect(set(spec) <= {"selector", "namespaceSelector", "endpoints"}, case, "ServiceMonitor spec")
    endpoints = spec.get("endpoints", [])
    expect(
        len(endpoints) == 1
        and endpoints[0].get("port") == "http"
        and endpoints[0].get("path") == "/metrics",
        case,
        "ServiceMonitor must scrape port http, path /metrics",
    )
    expect(spec.get("selector", {}).get("matchLabels"), case, "ServiceMonitor selector")


# --- security properties --------------------------------------------------


def check_pod(spec: dict[str, Any], case: str, what: str) -> None:
    pod = spec.get("securityContext", {})
    expect(pod.get("runAsNonRoot") is True, case, f"{what}: pod runAsNonRoot must be true")
    expect(
        pod.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        case,
        f"{what}: pod seccompProfile must be RuntimeDefault",
    )
    expect(
        spec.get("automountServiceAccountToken") is False,
        case,
        f"{what}: automountServiceAccountToken must be false",
    )
    expect(spec.get("hostNetwork") is not True, case, f"{what}: hostNetwork")
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        sc = container.get("securityContext", {})
        cname = f"{what} container {container.get('name')}"
        expect(sc.get("runAsNonRoot") is True, case, f"{cname}: runAsNonRoot must be true")
        expect(sc.get("runAsUser") == 10001, case, f"{cname}: runAsUser must be 10001")
        expect(
            sc.get("readOnlyRootFilesystem") is True,
            case,
            f"{cname}: readOnlyRootFilesystem must be true",
        )
        expect(
            sc.get("allowPrivilegeEscalation") is False,
            case,
            f"{cname}: allowPrivilegeEscalation must be false",
        )
        caps = sc.get("capabilities", {})
        expect(caps.get("drop") == ["ALL"], case, f"{cname}: capabilities must drop ALL")
        expect(not caps.get("add"), case, f"{cname}: no capability may be added")
        expect(sc.get("privileged") is not True, case, f"{cname}: privileged")
        res = container.get("resources", {})
        expect(
            res.get("requests") and res.get("limits"),
            case,
            f"{cname}: resource requests and limits",
        )


def check_deployment(docs: list[dict[str, Any]], values: dict[str, Any], case: str) -> None:
    deployment = one(docs, "Deployment", case)
    spec = deployment.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    check_pod(pod, case, "Deployment")
    autoscaling = values.get("autoscaling", {}).get("enabled", False)
    if autoscaling:
        expect("replicas" not in spec, case, "with an HPA the Deployment must not set replicas")
        expect(len(by_kind(docs, "HorizontalPodAutoscaler")) == 1, case, "HPA missing")
    else:
        expect(
            spec.get("replicas") == values.get("replicaCount", 2),
            case,
            f"replicas {spec.get('replicas')} != replicaCount",
        )
    rolling = spec.get("strategy", {}).get("rollingUpdate", {})
    expect(rolling.get("maxUnavailable") == 0, case, "rolling update must keep maxUnavailable 0")
    annotations = spec.get("template", {}).get("metadata", {}).get("annotations", {})
    expect(len(annotations.get("checksum/config", "")) == 64, case, "checksum/config annotation")
    container = pod.get("containers", [{}])[0]
    expect(
        container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
        case,
        "liveness probe must GET /healthz",
    )
    expect(
        container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
        case,
        "readiness probe must GET /readyz",
    )
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    pause = int(pre_stop[-1]) if pre_stop else 0
    expect(
        pod.get("terminationGracePeriodSeconds", 30) > 30 + pause,
        case,
        "terminationGracePeriodSeconds must exceed the preStop pause + the 30 s drain",
    )
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tmp = mounts.get("/tmp", "")  # noqa: S108 - the container's /tmp, checked to be an emptyDir
    expect("emptyDir" in volumes.get(tmp, {}), case, "the container's /tmp must be an emptyDir")
    expect(mounts.get(CONFIG_DIR) == "config", case, f"config must be mounted at {CONFIG_DIR}")
    check_references(container, mounts, docs, case)


def check_references(
    container: dict[str, Any], mounts: dict[str, str], docs: list[dict[str, Any]], case: str
) -> None:
    """Every credential the config names is actually provided to the container."""
    config, _ = rendered_config(docs)
    env = {e["name"] for e in container.get("env", [])}
    for source in sources(config):
        if "env" in source:
            expect(source["env"] in env, case, f"config reads env {source['env']}: not set")
        if "file" in source and str(source["file"]).startswith(SECRET_DIR):
            expect(
                SECRET_DIR.rstrip("/") in mounts,
                case,
                f"config reads {source['file']}: no credentials volume mounted",
            )


def check_no_secret_values(docs: list[dict[str, Any]], case: str) -> None:
    expect(not by_kind(docs, "Secret"), case, "the chart must never render a Secret")
    config, _ = rendered_config(docs)
    expect(
        not any("value" in source for source in sources(config)),
        case,
        "the ConfigMap must never hold a {value: …} credential",
    )
    redis_url = config.get("state", {}).get("redis_url")
    expect(
        not (isinstance(redis_url, str) and redis_has_credentials(redis_url)),
        case,
        "the ConfigMap must never hold a Redis URL with a password",
    )
    service_accounts = by_kind(docs, "ServiceAccount")
    for account in service_accounts:
        expect(
            account.get("automountServiceAccountToken") is False,
            case,
            "ServiceAccount must set automountServiceAccountToken: false",
        )


def check_surroundings(docs: list[dict[str, Any]], values: dict[str, Any], case: str) -> None:
    if values.get("podDisruptionBudget", {}).get("enabled", True):
        pdb = one(docs, "PodDisruptionBudget", case)
        expect(
            pdb.get("spec", {}).get("minAvailable")
            == values.get("podDisruptionBudget", {}).get("minAvailable", 1),
            case,
            "PodDisruptionBudget minAvailable",
        )
    if values.get("networkPolicy", {}).get("enabled"):
        policy = one(docs, "NetworkPolicy", case)
        ports = {
            (p.get("port"), p.get("protocol"))
            for rule in policy.get("spec", {}).get("egress", [])
            for p in rule.get("ports", [])
        }
        expect({(53, "UDP"), (53, "TCP"), (443, "TCP")} <= ports, case, "egress DNS + 443")
        expect(
            set(policy.get("spec", {}).get("policyTypes", [])) == {"Ingress", "Egress"},
            case,
            "NetworkPolicy must restrict both directions",
        )
        port = redis_port(values)
        expect(
            port is None or (port, "TCP") in ports,
            case,
            f"NetworkPolicy egress must reach the configured Redis port {port}",
        )
    # The helm test pod (the only bare Pod) must not pass for a gateway pod:
    # the Service would route to it, the NetworkPolicy would cut its egress.
    selectors = [
        *(("Service", d.get("spec", {}).get("selector", {})) for d in by_kind(docs, "Service")),
        *(
            ("NetworkPolicy", d.get("spec", {}).get("podSelector", {}).get("matchLabels", {}))
            for d in by_kind(docs, "NetworkPolicy")
        ),
        *(
            ("PodDisruptionBudget", d.get("spec", {}).get("selector", {}).get("matchLabels", {}))
            for d in by_kind(docs, "PodDisruptionBudget")
        ),
    ]
    for pod in by_kind(docs, "Pod"):
        labels = pod.get("metadata", {}).get("labels", {})
        for kind, selector in selectors:
            expect(
                not selector or not selector.items() <= labels.items(),
                case,
                f"the {kind} must not select the helm test pod",
            )
    for ingress in by_kind(docs, "Ingress"):
        paths = [
            p.get("path")
            for rule in ingress.get("spec", {}).get("rules", [])
            for p in rule.get("http", {}).get("paths", [])
        ]
        expect(paths, case, "Ingress without paths")
        expect(
            not any(p in ("/", "/metrics", "/readyz", "/healthz") for p in paths),
            case,
            f"Ingress exposes internal endpoints: {paths}",
        )
    expect(one(docs, "Service", case), case, "Service")
    tests = [
        d
        for d in by_kind(docs, "Pod")
        if d.get("metadata", {}).get("annotations", {}).get("helm.sh/hook") == "test"
    ]
    expect(len(tests) == 1, case, "one helm test pod")
    for test in tests:
        check_pod(test.get("spec", {}), case, "test pod")
        expect("/healthz" in json.dumps(test.get("spec", {})), case, "test pod must GET /healthz")


# --- the rendered exchanger config ---------------------------------------------


def rendered_config(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Any] | None]:
    data: dict[str, str] = next((d.get("data", {}) for d in by_kind(docs, "ConfigMap")), {})
    config = yaml.safe_load(data.get("exchanger.yaml", "")) or {}
    policies = yaml.safe_load(data["policies.yaml"]) if "policies.yaml" in data else None
    return config, policies


def sources(node: Any) -> Iterator[dict[str, Any]]:
    """Secret sources ({env}, {file}, {value}) anywhere in the config."""
    if isinstance(node, dict):
        if len(node) == 1 and next(iter(node)) in ("env", "file", "value"):
            yield node
        else:
            for child in node.values():
                yield from sources(child)
    elif isinstance(node, list):
        for child in node:
            yield from sources(child)


def redis_has_credentials(url: str) -> bool:
    """User info before the host, or a password= query parameter (redis-py reads both)."""
    parsed = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parsed.query)
    return "@" in parsed.netloc or any(key.lower() == "password" for key in query)


def redis_port(values: dict[str, Any]) -> int | None:
    """The Redis port the NetworkPolicy must open: of a plain-text URL only."""
    url = values.get("config", {}).get("state", {}).get("redis_url")
    if not isinstance(url, str):
        url = values.get("state", {}).get("redisUrl") or None
    if not url or not url.startswith(("redis://", "rediss://")):
        return None
    return urllib.parse.urlsplit(url).port or 6379


def check_config(
    docs: list[dict[str, Any]], values: dict[str, Any], case: str, python: str
) -> None:
    config, policies = rendered_config(docs)
    expected = copy.deepcopy(values.get("config", {}))
    if values.get("policies"):
        expected["policy_files"] = [*expected.get("policy_files", []), "policies.yaml"]
    redis_url = values.get("state", {}).get("redisUrl")
    if redis_url:
        expected["state"] = {"redis_url": redis_url}
    expect(config == expected, case, "exchanger.yaml differs from the values' config")
    expect(
        policies == (values.get("policies") or None),
        case,
        "policies.yaml differs from the values' policies",
    )
    from exchanger.config.schema import SCHEMA

    if "state" in config and "state" not in SCHEMA["properties"]:
        # state.redisUrl is prepared ahead of the gateway's support for it;
        # until the config schema has `state`, check the rest, and say so.
        print(f"note {case}: `exchanger schema` has no `state` yet; checking without it")
        config = {key: value for key, value in config.items() if key != "state"}
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for error in validator.iter_errors(config):
        fail(case, f"exchanger.yaml: {'/'.join(map(str, error.path))}: {error.message}")
    policy_validator = jsonschema.Draft202012Validator(SCHEMA["$defs"]["policy"])
    for index, policy in enumerate(policies or []):
        for error in policy_validator.iter_errors(policy):
            fail(case, f"policies.yaml[{index}]: {error.message}")
    exchanger_check(config, policies, case, python)


def exchanger_check(
    config: dict[str, Any], policies: list[Any] | None, case: str, python: str
) -> None:
    """`exchanger check` on the rendered files, with stand-in credentials."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "etc").mkdir()
        (base / "secrets").mkdir()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp}
        config = copy.deepcopy(config)
        for source in sources(config):
            if "env" in source:
                env[source["env"]] = stand_in_credential(config, source)
            elif "file" in source and str(source["file"]).startswith(SECRET_DIR):
                stand_in = base / "secrets" / str(source["file"])[len(SECRET_DIR) :]
                stand_in.write_text(stand_in_credential(config, source), encoding="utf-8")
                source["file"] = str(stand_in)
        (base / "etc" / "exchanger.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        if policies is not None:
            (base / "etc" / "policies.yaml").write_text(yaml.safe_dump(policies), "utf-8")
        result = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
            [python, "-m", "exchanger", "check", "--config", str(base / "etc" / "exchanger.yaml")],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=False,
            timeout=60,
        )
        expect(
            result.returncode == 0,
            case,
            f"`exchanger check` refuses the rendered config:\n{result.stderr}",
        )


def stand_in_credential(config: dict[str, Any], source: dict[str, Any]) -> str:
    app_key = config.get("github", {}).get("app", {}).get("private_key")
    if source is config.get("state", {}).get("redis_url"):
        return "rediss://exchanger:stand-in@redis.invalid:6379/0"
    if source is app_key:
        from joserfc.jwk import RSAKey

        pem = RSAKey.generate_key(2048, private=True).as_pem(private=True)
        return pem.decode() if isinstance(pem, bytes) else str(pem)
    return "stand-in"


# --- cases ------------------------------------------------------------------


def checksum(helm: Helm, case: str, *args: str) -> str:
    result = helm.template(*args)
    if not expect(result.returncode == 0, case, f"helm template {' '.join(args)}: {result.stderr}"):
        return ""
    deployment = by_kind(documents(result.stdout), "Deployment")[0]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    return str(annotations["checksum/config"])


def check_checksum(helm: Helm, tmp: Path) -> None:
    case = "checksum"
    default = CHART / "ci" / "default-values.yaml"
    app = CHART / "ci" / "app-values.yaml"
    base = checksum(helm, case, "-f", str(default))
    changed = checksum(
        helm, case, "-f", str(default), "--set", "config.server.max_body_bytes=131072"
    )
    unrelated = checksum(helm, case, "-f", str(default), "--set", "replicaCount=3")
    expect(base and changed and base != changed, case, "a config change must change it")
    expect(base and base == unrelated, case, "replicaCount must not change it")
    app_values = yaml.safe_load(app.read_text(encoding="utf-8"))
    app_values["policies"][0]["grants"]["secrets"] = ["another"]
    other = tmp / "other-policies.yaml"
    other.write_text(yaml.safe_dump(app_values), encoding="utf-8")
    expect(
        checksum(helm, case, "-f", str(app)) != checksum(helm, case, "-f", str(other)),
        case,
        "a policy change must change it",
    )


def check_refusals(helm: Helm) -> None:
    case = "refusals"
    plain = helm.template()
    expect(
        plain.returncode != 0 and "audiences" in plain.stderr,
        case,
        "the defaults alone must refuse to render without an audience",
    )
    default = str(CHART / "ci" / "default-values.yaml")
    for args, why in [
        (["--set", "config.github.token.value=ghp_x"], "a PAT as {value: …}"),
        (
            ["--set", "config.issuers[0].audiences[0]=https://github.com/acme"],
            "GitHub's default audience",
        ),
        (["--set", "state.redisUrl=redis://user:pass@redis:6379/0"], "a Redis URL with a password"),
        (["--set", "terminationGracePeriodSeconds=32"], "a grace period shorter than the drain"),
        (["--set", "unknownKey=1"], "an unknown value"),
        (["--set", "podDisruptionBudget.minimum=1"], "an unknown nested value"),
    ]:
        result = helm.template("-f", default, *args)
        expect(result.returncode != 0, case, f"must refuse {why}")


def check_default_network_policy(helm: Helm) -> None:
    """The defaults (plus the audience they lack) render the NetworkPolicy."""
    case = "default-networkpolicy"
    default = str(CHART / "ci" / "default-values.yaml")
    result = helm.template("-f", default)
    if not expect(result.returncode == 0, case, f"helm template:\n{result.stderr}"):
        return
    policy = one(documents(result.stdout), "NetworkPolicy", case)
    egress = policy.get("spec", {}).get("egress", [])
    expect(
        egress[:2]
        == [
            {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
            {"ports": [{"port": 443, "protocol": "TCP"}]},
        ]
        and len(egress) == 2,
        case,
        f"default egress must be DNS to anywhere and TCP 443 to anywhere, no more: {egress}",
    )
    ingress = policy.get("spec", {}).get("ingress", [])
    expect(
        ingress == [{"ports": [{"port": "http", "protocol": "TCP"}]}],
        case,
        f"default ingress must be the gateway's port from anywhere: {ingress}",
    )
    redis = helm.template("-f", default, "--set", "state.redisUrl=rediss://redis.cache.svc/0")
    if expect(redis.returncode == 0, case, f"helm template with Redis:\n{redis.stderr}"):
        egress = one(documents(redis.stdout), "NetworkPolicy", case)["spec"]["egress"]
        expect(
            {"ports": [{"port": 6379, "protocol": "TCP"}]} in egress,
            case,
            f"a Redis URL without a port must open 6379: {egress}",
        )
    off = helm.template("-f", default, "--set", "networkPolicy.enabled=false")
    expect(
        off.returncode == 0 and not by_kind(documents(off.stdout), "NetworkPolicy"),
        case,
        "networkPolicy.enabled=false must render no NetworkPolicy",
    )


# What every refusal must point at, and a credential it must never echo.
SECRET_HINTS = (
    "rendered into the ConfigMap in plain text",
    "existingSecret (or extraExistingSecrets), whose keys are mounted as files, "
    f"and write {{file: {SECRET_DIR}KEY}}",
    "secretEnv ({name: NAME, secretName: SECRET, key: KEY}) and write {env: NAME}",
)
REDIS_HINTS = (
    "the Redis URL carries a password",
    "rendered into the ConfigMap in plain text",
    f"config.state.redis_url (leaving state.redisUrl empty) to {{file: {SECRET_DIR}KEY}}",
    "existingSecret",
    "{env: REDIS_URL} with secretEnv",
)
LEAK = "s3cr3t-Leak"


def secret_sources_values() -> dict[str, Any]:
    """A config reading every kind of credential from Secrets: it must render."""
    return {
        "existingSecret": "exchanger-credentials",
        "secretEnv": [
            {"name": "GITHUB_TOKEN", "key": "github-token"},
            {"name": "REDIS_URL", "key": "redis-url"},
        ],
        "config": {
            "issuers": [
                {
                    "issuer": "https://token.actions.githubusercontent.com",
                    "audiences": ["https://exchanger.example.com"],
                }
            ],
            "github": {"token": {"env": "GITHUB_TOKEN"}},
            "secrets": {
                "registry": {
                    "username": {"file": f"{SECRET_DIR}registry-username"},
                    "password": {"file": f"{SECRET_DIR}registry-password"},
                },
                "signing": {"key": {"env": "GITHUB_TOKEN"}},
            },
            "state": {"redis_url": {"env": "REDIS_URL"}},
        },
        "policies": [
            {
                "name": "registry-from-main",
                "claims": {"repository_owner_id": "1234", "ref": "refs/heads/main"},
                "grants": {"secrets": ["registry"]},
            }
        ],
        "networkPolicy": {
            "extraEgress": [{"ports": [{"port": 6380, "protocol": "TCP"}]}],
        },
    }


def with_config(section: str, key: str, node: Any) -> dict[str, Any]:
    """secret_sources_values() with config[section][key] replaced by node."""
    values = secret_sources_values()
    config = values["config"]
    *parents, last = [*section.split("."), key] if section else [key]
    for parent in parents:
        config = config[parent]
    config[last] = node
    return values


def check_secret_sources(helm: Helm, tmp: Path, versions: list[str], python: str) -> None:
    """Credentials that would land in the ConfigMap are refused, with a useful
    message; the same config with {file: …}/{env: …} renders and passes every
    check of a values file."""
    good = tmp / "secret-sources-values.yaml"
    good.write_text(yaml.safe_dump(secret_sources_values()), encoding="utf-8")
    check_case(helm, good, versions, python)

    inline = {"value": LEAK}
    pkcs11 = {"module": "/usr/lib/p11.so", "token_label": "t", "key_label": "k", "pin": inline}
    refused: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
        (
            "a secret field as {value: …}",
            with_config("secrets.registry", "username", inline),
            "config.secrets.registry.username.value",
            SECRET_HINTS,
        ),
        (
            "a secret field as {value: …} beside {env: …} ones",
            with_config("secrets.signing", "key", inline),
            "config.secrets.signing.key.value",
            SECRET_HINTS,
        ),
        (
            "a PAT as {value: …}",
            with_config("github", "token", inline),
            "config.github.token.value",
            SECRET_HINTS,
        ),
        (
            "the App key as {value: …}",
            with_config("", "github", {"app": {"id": 1234, "private_key": inline}}),
            "config.github.app.private_key.value",
            SECRET_HINTS,
        ),
        (
            "the PKCS#11 pin as {value: …}",
            with_config("", "github", {"app": {"id": 1234, "pkcs11": pkcs11}}),
            "config.github.app.pkcs11.pin.value",
            SECRET_HINTS,
        ),
        (
            "the Redis URL as {value: …}",
            with_config("state", "redis_url", {"value": f"redis://:{LEAK}@redis/0"}),
            "config.state.redis_url.value",
            SECRET_HINTS,
        ),
    ]
    for url in (
        f"redis://:{LEAK}@redis.cache:6379/0",
        f"rediss://gw:{LEAK}@redis.cache:6380/0",
        f"redis://redis.cache:6379/0?password={LEAK}",
        f"unix://:{LEAK}@/run/redis/redis.sock",
    ):
        scheme = url.split("://")[0]
        values = with_config("state", "redis_url", url)
        refused.append(
            (f"a {scheme} URL with a password", values, "config.state.redis_url", REDIS_HINTS)
        )
    values = secret_sources_values()
    del values["config"]["state"]
    values["state"] = {"redisUrl": f"redis://gw:{LEAK}@redis.cache:6379/0"}
    refused.append(("state.redisUrl with a password", values, "state.redisUrl", REDIS_HINTS))

    case = "secret-sources"
    bad = tmp / "refused-values.yaml"
    for why, values, named, hints in refused:
        bad.write_text(yaml.safe_dump(values), encoding="utf-8")
        result = helm.template("-f", str(bad))
        if not expect(result.returncode != 0, case, f"must refuse {why} ({named})"):
            continue
        message = result.stderr
        expect(f": {named}: " in message, case, f"{why}: the error must name {named}:\n{message}")
        expect(LEAK not in message, case, f"{why}: the error must not echo the credential")
        for hint in hints:
            expect(hint in message, case, f"{why}: the error must say {hint!r}:\n{message}")


def merged(defaults: Any, override: Any) -> Any:
    """Helm's coalescing of values: maps merge key by key, anything else replaces."""
    if isinstance(defaults, dict) and isinstance(override, dict):
        out = dict(defaults)
        for key, value in override.items():
            out[key] = merged(defaults.get(key), value) if key in defaults else value
        return out
    return copy.deepcopy(override)


def check_case(helm: Helm, values_file: Path, versions: list[str], python: str) -> None:
    case = values_file.stem
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    values = merged(defaults, yaml.safe_load(values_file.read_text(encoding="utf-8")) or {})
    lint = helm.lint(values_file)
    expect(lint.returncode == 0, case, f"helm lint --strict:\n{lint.stdout}{lint.stderr}")
    result = helm.template("-f", str(values_file))
    if not expect(result.returncode == 0, case, f"helm template:\n{result.stderr}"):
        return
    docs = documents(result.stdout)
    kinds = sorted(f"{d['kind']}" for d in docs)
    print(f"{case}: {len(docs)} manifests ({', '.join(kinds)})")
    validate_manifests(docs, case, versions)
    check_no_secret_values(docs, case)
    check_deployment(docs, values, case)
    check_surroundings(docs, values, case)
    check_config(docs, values, case, python)


MARKER = "<!-- check-deploy: values"


def readme_values(tmp: Path) -> list[Path]:
    """Values examples marked in the READMEs, so that they cannot rot.

    The chart's README must hold one; the project README's copy, if marked
    the same way, is checked too.
    """
    found = []
    for readme in (CHART / "README.md", ROOT / "README.md"):
        text = readme.read_text(encoding="utf-8") if readme.exists() else ""
        for number, section in enumerate(text.split(MARKER)[1:], 1):
            _, fence, rest = section.partition("```yaml\n")
            block, end, _ = rest.partition("```\n")
            if not (fence and end):
                fail(str(readme.relative_to(ROOT)), f"no ```yaml block after {MARKER}")
                continue
            name = "chart-README" if readme.parent == CHART else "README"
            path = tmp / f"{name}-example{number}.yaml"
            path.write_text(block, encoding="utf-8")
            found.append(path)
    if not any(path.name.startswith("chart-README") for path in found):
        fail("charts/exchanger/README.md", f"no values example marked {MARKER}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helm", type=Path, required=True)
    args = parser.parse_args()
    helm = Helm(args.helm)
    versions = [OLDEST_KUBERNETES, kubernetes_validate.latest_version()]
    print(f"validating against Kubernetes {' and '.join(versions)}")
    cases = sorted((CHART / "ci").glob("*-values.yaml"))
    if not cases:
        fail("ci", "no values files in charts/exchanger/ci")
    with tempfile.TemporaryDirectory() as tmp:
        cases.extend(readme_values(Path(tmp)))
        for values_file in cases:
            check_case(helm, values_file, versions, sys.executable)
        check_checksum(helm, Path(tmp))
        check_secret_sources(helm, Path(tmp), versions, sys.executable)
    check_refusals(helm)
    check_default_network_policy(helm)
    print(f"{len(cases)} values files checked")
    if failures:
        print(f"\nchart checks: {len(failures)} failed", file=sys.stderr)
        return 1
    print("chart checks: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
