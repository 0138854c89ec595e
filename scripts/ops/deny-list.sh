#!/usr/bin/env bash
# The issuer's deny list: its current version (head_version) and the changes
# after FROM_VERSION (default 0: the whole list as changes), oldest first.
# Usage: scripts/ops/deny-list.sh [FROM_VERSION] [PAGE_SIZE]
source "$(dirname "$0")/lib.sh"
from="${1:-0}"
size="${2:-1000}"
[[ "$from" =~ ^[0-9]+$ ]] || die "FROM_VERSION must be a number"
[[ "$size" =~ ^[0-9]+$ ]] || die "PAGE_SIZE must be a number"
rpc "$ISSUER_ADDRESS" "$ISSUER_SERVICE/ListDenyListChanges" "{\"from_version\": \"$from\", \"page_size\": $size}"
