#!/usr/bin/env python3
"""Extract the GitHub REST operations the gateway uses from GitHub's OpenAPI description.

The source is the npm package ``@octokit/openapi`` (MIT licence), which republishes
``github/rest-api-description`` with an ``x-octokit`` extension. Only
``generated/ghec.json`` holds the ``/enterprises/...`` runner endpoints, so that is
the file we read. The output keeps the operations listed in ``OPERATIONS`` (and no
other method of the same paths) plus every ``#/components/...`` entry they reference,
directly or transitively, and is written with sorted keys so that diffs stay readable.

Rerun (needs ``npm`` and network access to the npm registry; the tests never do)::

    python3 scripts/extract_github_openapi.py
    # or, with a tarball fetched earlier by `npm pack @octokit/openapi@23.0.2`:
    python3 scripts/extract_github_openapi.py --tarball octokit-openapi-23.0.2.tgz

To move to a newer spec, change ``PACKAGE_VERSION``, rerun, review the diff of
``tests/data/github-openapi.json``, and update ``tests/data/README.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PACKAGE = "@octokit/openapi"
PACKAGE_VERSION = "23.0.2"
SPEC_MEMBER = "package/generated/ghec.json"
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "github-openapi.json"

_RUNNER_SCOPES = (
    "/repos/{owner}/{repo}",
    "/orgs/{org}",
    "/enterprises/{enterprise}",
)
_RUNNER_ACTIONS = ("registration-token", "remove-token", "generate-jitconfig")

#: (method, path) of every operation the gateway (or its fake GitHub) speaks.
OPERATIONS: tuple[tuple[str, str], ...] = (
    *(
        ("post", f"{scope}/actions/runners/{action}")
        for scope in _RUNNER_SCOPES
        for action in _RUNNER_ACTIONS
    ),
    ("get", "/orgs/{org}/actions/runner-groups"),
    ("get", "/repos/{owner}/{repo}/installation"),
    ("get", "/orgs/{org}/installation"),
    ("get", "/users/{username}/installation"),
    ("get", "/app/installations/{installation_id}"),
    ("post", "/app/installations/{installation_id}/access_tokens"),
    ("get", "/app"),
    ("delete", "/installation/token"),
    *(("delete", f"{scope}/actions/runners/{{runner_id}}") for scope in _RUNNER_SCOPES),
)

_PATH_ITEM_SHARED = ("parameters", "servers", "summary", "description")


def _refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` string anywhere below ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _component_key(ref: str) -> tuple[str, str]:
    prefix = "#/components/"
    if not ref.startswith(prefix):
        raise ValueError(f"unsupported $ref {ref!r} (only local components are expected)")
    section, _, name = ref[len(prefix) :].partition("/")
    if not name or "/" in name:
        raise ValueError(f"unsupported $ref {ref!r}")
    return section, name.replace("~1", "/").replace("~0", "~")


def extract(full: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``full`` that holds OPERATIONS and what they reference."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path in OPERATIONS:
        item = full["paths"].get(path)
        if item is None or method not in item:
            raise KeyError(f"{method.upper()} {path} is not in the source spec")
        out = paths.setdefault(path, {k: item[k] for k in _PATH_ITEM_SHARED if k in item})
        out[method] = item[method]

    components: dict[str, dict[str, Any]] = {}
    pending = list(_refs(paths))
    while pending:
        section, name = _component_key(pending.pop())
        if name in components.get(section, {}):
            continue
        node = full["components"][section][name]
        components.setdefault(section, {})[name] = node
        pending.extend(_refs(node))

    info = dict(full["info"])
    info["x-extracted"] = {
        "source": f"npm {PACKAGE}@{PACKAGE_VERSION}, {SPEC_MEMBER.removeprefix('package/')}",
        "operations": [f"{m.upper()} {p}" for m, p in OPERATIONS],
        "script": "scripts/extract_github_openapi.py",
    }
    return {
        "openapi": full["openapi"],
        "info": info,
        "servers": full["servers"],
        "paths": paths,
        "components": components,
    }


def _npm_pack(destination: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is required (or pass --tarball)")
    result = subprocess.run(  # noqa: S603 - fixed argument list, no shell
        [npm, "pack", f"{PACKAGE}@{PACKAGE_VERSION}", "--pack-destination", str(destination)],
        check=True,
        capture_output=True,
        text=True,
    )
    name = result.stdout.strip().splitlines()[-1]
    return destination / name


def _read_spec(tarball: Path) -> dict[str, Any]:
    with tarfile.open(tarball, "r:gz") as archive:
        package_json = archive.extractfile("package/package.json")
        member = archive.extractfile(SPEC_MEMBER)
        if package_json is None or member is None:
            raise SystemExit(f"{tarball} does not look like {PACKAGE}")
        meta = json.load(package_json)
        if meta.get("version") != PACKAGE_VERSION or meta.get("license") != "MIT":
            raise SystemExit(
                f"expected {PACKAGE}@{PACKAGE_VERSION} (MIT), "
                f"got {meta.get('version')} ({meta.get('license')})"
            )
        spec: dict[str, Any] = json.load(member)
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tarball", type=Path, help="an already downloaded npm tarball")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or _npm_pack(Path(tmp))
        subset = extract(_read_spec(tarball))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(subset, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    args.output.write_text(text, encoding="utf-8")
    counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(subset["components"].items()))
    print(
        f"{args.output}: {len(text.encode()) // 1024} KiB, "
        f"{len(OPERATIONS)} operations on {len(subset['paths'])} paths; {counts}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
