#!/usr/bin/env bash
# The gRPC services each server offers, read by server reflection.
# Usage: scripts/ops/services.sh [terminal|issuer|authorizer ...]   (default: all three)
source "$(dirname "$0")/lib.sh"
servers=("$@")
[[ ${#servers[@]} -eq 0 ]] && servers=(terminal issuer authorizer)
for server in "${servers[@]}"; do
  address="$(address_of "$server")"
  echo "# $server $address"
  list_services "$address"
done
