#!/usr/bin/env bash
# Removes one reason a card is on the issuer's deny list (the card stays
# listed while another reason remains).
# Usage: scripts/ops/unlist-card.sh CARD_ID REASON   (REASON: LOST, REVOKED, CLONED or DEBT)
source "$(dirname "$0")/lib.sh"
[[ $# -eq 2 ]] || die "usage: $0 CARD_ID LOST|REVOKED|CLONED|DEBT"
[[ "$2" =~ ^(LOST|REVOKED|CLONED|DEBT)$ ]] || die "REASON must be LOST, REVOKED, CLONED or DEBT"
rpc "$ISSUER_ADDRESS" "$ISSUER_SERVICE/RemoveFromDenyList" "{\"card_id\": $(json_string "$1"), \"reason\": \"DENY_LIST_REASON_$2\"}"
