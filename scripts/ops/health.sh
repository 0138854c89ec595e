#!/usr/bin/env bash
# Health of each server (grpc.health.v1): prints "<server> <address> <status>"
# and exits 1 unless every server asked is SERVING.
# Usage: scripts/ops/health.sh [terminal|issuer|authorizer ...]   (default: all three)
source "$(dirname "$0")/lib.sh"
servers=("$@")
[[ ${#servers[@]} -eq 0 ]] && servers=(terminal issuer authorizer)
failed=0
for server in "${servers[@]}"; do
  address="$(address_of "$server")"
  if out="$(rpc "$address" grpc.health.v1.Health/Check '{"service": ""}' 2>&1)"; then
    status="$(grep -o '"status": *"[A-Z_]*"' <<<"$out" | grep -o '[A-Z_]*"$' | tr -d '"')"
  else
    status="UNREACHABLE"
  fi
  echo "$server $address ${status:-UNKNOWN}"
  [[ "$status" == SERVING ]] || failed=1
done
exit "$failed"
