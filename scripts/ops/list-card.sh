#!/usr/bin/env bash
# Puts a card on the issuer's deny list; terminals decline it once they sync.
# Usage: scripts/ops/list-card.sh CARD_ID REASON   (REASON: LOST, REVOKED, CLONED or DEBT)
source "$(dirname "$0")/lib.sh"
[[ $# -eq 2 ]] || die "usage: $0 CARD_ID LOST|REVOKED|CLONED|DEBT"
[[ "$2" =~ ^(LOST|REVOKED|CLONED|DEBT)$ ]] || die "REASON must be LOST, REVOKED, CLONED or DEBT"
rpc "$ISSUER_ADDRESS" "$ISSUER_SERVICE/AddToDenyList" "{\"card_id\": $(json_string "$1"), \"reason\": \"DENY_LIST_REASON_$2\"}"
