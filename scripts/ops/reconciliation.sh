#!/usr/bin/env bash
# The issuer's reconciliation report of a service day: taps by state, what
# was debited and settled, what is still unsettled, and the mismatches.
# Usage: scripts/ops/reconciliation.sh [SERVICE_DAY] [PAGE_SIZE]   (default: today, UTC)
source "$(dirname "$0")/lib.sh"
day="${1:-$(date -u +%F)}"
size="${2:-100}"
[[ "$day" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] || die "SERVICE_DAY must be YYYY-MM-DD"
[[ "$size" =~ ^[0-9]+$ ]] || die "PAGE_SIZE must be a number"
rpc "$ISSUER_ADDRESS" "$ISSUER_SERVICE/GetReconciliationReport" "{\"service_day\": \"$day\", \"page_size\": $size}"
