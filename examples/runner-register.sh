#!/usr/bin/env bash
# Register a self-hosted runner with a registration token from exchanger, run it,
# and remove it again on exit with a removal token — for hosts that keep a runner
# for more than one job. Prefer runner-jit.sh where an ephemeral runner will do.
#
#   EXCHANGER_URL        https://exchanger.example.com (required)
#   RUNNER_SCOPE         owner/repo, owner, or enterprise:slug (required: it forms the URL)
#   GITHUB_URL           https://github.com (GHES: https://HOST)
#   RUNNER_LABELS, RUNNER_NAME   passed to config.sh
#   ID_TOKEN / ID_TOKEN_FILE     the identity token, or a file holding it
set -euo pipefail

: "${EXCHANGER_URL:?set EXCHANGER_URL}"
: "${RUNNER_SCOPE:?set RUNNER_SCOPE}"
GITHUB_URL=${GITHUB_URL:-https://github.com}
RUNNER_DIR=${RUNNER_DIR:-$(pwd)}

id_token() {
  if [[ -n "${ID_TOKEN:-}" ]]; then printf '%s' "$ID_TOKEN"
  elif [[ -n "${ID_TOKEN_FILE:-}" ]]; then tr -d '\r\n' <"$ID_TOKEN_FILE"
  else echo "no identity token: set ID_TOKEN or ID_TOKEN_FILE" >&2; return 1
  fi
}

# POST /register or /remove; prints the runner token, or fails without asking when
# there is no identity token. Tokens go to curl on stdin, never on its command line.
runner_token() {
  local body token
  body=$(python3 -c 'import json, sys; print(json.dumps({"scope": sys.argv[1]}))' "$RUNNER_SCOPE")
  token=$(id_token) || return 1
  [[ -n "$token" ]] || { echo "empty identity token" >&2; return 1; }
  printf 'Authorization: Bearer %s\n' "$token" |
    curl -fsS --retry 3 --retry-connrefused -X POST -H @- \
      -H 'Content-Type: application/json' --data "$body" "$EXCHANGER_URL/$1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"], end="")'
}

case "$RUNNER_SCOPE" in
  enterprise:*) url="$GITHUB_URL/enterprises/${RUNNER_SCOPE#enterprise:}" ;;
  *) url="$GITHUB_URL/$RUNNER_SCOPE" ;;
esac

cd "$RUNNER_DIR"
args=(--unattended --replace --url "$url" --token "$(runner_token register)")
[[ -n "${RUNNER_NAME:-}" ]] && args+=(--name "$RUNNER_NAME")
[[ -n "${RUNNER_LABELS:-}" ]] && args+=(--labels "$RUNNER_LABELS")
./config.sh "${args[@]}"

# Without a removal token (e.g. the identity token expired while the runner ran) there is
# nothing to hand config.sh: say so rather than call it with an empty --token.
deregister() {
  local token
  if token=$(runner_token remove); then
    ./config.sh remove --token "$token" || echo "runner removal failed" >&2
  else
    echo "runner removal failed: no removal token from exchanger" >&2
  fi
}
trap deregister EXIT
./run.sh
