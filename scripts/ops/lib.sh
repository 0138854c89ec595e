# Shared by the ops scripts (sourced, not run). Calls a tapcredit server by
# server reflection only, no proto files: with grpcurl when it is installed,
# else with `buf curl` (the repo's @bufbuild/buf, or npx).
#
# Addresses (the `npm start` defaults):
#   TERMINAL_ADDRESS   127.0.0.1:50051
#   ISSUER_ADDRESS     127.0.0.1:50052
#   AUTHORIZER_ADDRESS 127.0.0.1:50053
# Transport: mTLS with the ops identity's certificate from TAPCREDIT_CERTS_DIR
# (ca.pem, ops.pem, ops.key, as `npm run certs` writes them), or from
# ./data/certs when that holds one (what `npm start` creates); plaintext when
# TAPCREDIT_INSECURE=1 or when there is no ops certificate.
# TAPCREDIT_GRPC_CLIENT=grpcurl|buf picks the client.

set -euo pipefail

OPS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TERMINAL_ADDRESS="${TERMINAL_ADDRESS:-127.0.0.1:50051}"
ISSUER_ADDRESS="${ISSUER_ADDRESS:-127.0.0.1:50052}"
AUTHORIZER_ADDRESS="${AUTHORIZER_ADDRESS:-127.0.0.1:50053}"

TERMINAL_SERVICE=tapcredit.terminal.v1.TerminalService
ISSUER_SERVICE=tapcredit.issuer.v1.IssuerService
AUTHORIZER_SERVICE=tapcredit.authorizer.v1.AuthorizerService

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# The directory of the ops certificate, or nothing for plaintext.
ops_certs_dir() {
  if [[ "${TAPCREDIT_INSECURE:-}" == 1 ]]; then return; fi
  if [[ -n "${TAPCREDIT_CERTS_DIR:-}" ]]; then
    echo "$TAPCREDIT_CERTS_DIR"
  elif [[ -f "${TAPCREDIT_DATA_DIR:-$OPS_ROOT/data}/certs/ops.pem" ]]; then
    echo "${TAPCREDIT_DATA_DIR:-$OPS_ROOT/data}/certs"
  fi
}

grpc_client() {
  case "${TAPCREDIT_GRPC_CLIENT:-}" in
    grpcurl | buf) echo "$TAPCREDIT_GRPC_CLIENT" ;;
    "") if command -v grpcurl >/dev/null 2>&1; then echo grpcurl; else echo buf; fi ;;
    *) die "TAPCREDIT_GRPC_CLIENT must be grpcurl or buf" ;;
  esac
}

buf_cmd() {
  if [[ -x "$OPS_ROOT/node_modules/.bin/buf" ]]; then "$OPS_ROOT/node_modules/.bin/buf" "$@"; else npx --yes @bufbuild/buf "$@"; fi
}

# rpc ADDRESS SERVICE/METHOD [JSON]: one unary call; prints the response as JSON (defaults included).
rpc() {
  local address="$1" method="$2" body="${3:-}" certs
  [[ -n "$body" ]] || body='{}'
  certs="$(ops_certs_dir)"
  if [[ "$(grpc_client)" == grpcurl ]]; then
    local tls=(-plaintext)
    [[ -n "$certs" ]] && tls=(-cacert "$certs/ca.pem" -cert "$certs/ops.pem" -key "$certs/ops.key")
    grpcurl "${tls[@]}" -emit-defaults -d "$body" "$address" "$method"
  else
    local tls=(--http2-prior-knowledge) scheme=http
    [[ -n "$certs" ]] && tls=(--cacert "$certs/ca.pem" --cert "$certs/ops.pem" --key "$certs/ops.key") && scheme=https
    buf_cmd curl --protocol grpc "${tls[@]}" --emit-defaults -d "$body" "$scheme://$address/$method"
  fi
}

# list_services ADDRESS: the services the server offers, one a line.
list_services() {
  local address="$1" certs
  certs="$(ops_certs_dir)"
  if [[ "$(grpc_client)" == grpcurl ]]; then
    local tls=(-plaintext)
    [[ -n "$certs" ]] && tls=(-cacert "$certs/ca.pem" -cert "$certs/ops.pem" -key "$certs/ops.key")
    grpcurl "${tls[@]}" "$address" list
  else
    local tls=(--http2-prior-knowledge) scheme=http
    [[ -n "$certs" ]] && tls=(--cacert "$certs/ca.pem" --cert "$certs/ops.pem" --key "$certs/ops.key") && scheme=https
    buf_cmd curl --protocol grpc "${tls[@]}" --list-services "$scheme://$address"
  fi
}

# json_string VALUE: VALUE as a JSON string literal (ids only: quotes and backslashes escaped).
json_string() {
  local v="${1//\\/\\\\}"
  printf '"%s"' "${v//\"/\\\"}"
}

# address_of NAME: the address of terminal, issuer or authorizer.
address_of() {
  case "$1" in
    terminal) echo "$TERMINAL_ADDRESS" ;;
    issuer) echo "$ISSUER_ADDRESS" ;;
    authorizer) echo "$AUTHORIZER_ADDRESS" ;;
    *) die "unknown server '$1' (terminal, issuer or authorizer)" ;;
  esac
}
