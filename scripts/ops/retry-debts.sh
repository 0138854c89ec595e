#!/usr/bin/env bash
# Retries the declined debits (debts) of a card now, e.g. after the rider
# topped up; a card whose debts are all recovered leaves the deny list.
# Usage: scripts/ops/retry-debts.sh CARD_ID
source "$(dirname "$0")/lib.sh"
[[ $# -eq 1 ]] || die "usage: $0 CARD_ID"
rpc "$ISSUER_ADDRESS" "$ISSUER_SERVICE/RetryDebts" "{\"card_id\": $(json_string "$1")}"
