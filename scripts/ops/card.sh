#!/usr/bin/env bash
# A card at the issuer: its binding (rider's account, agreement), state and
# its most recent taps with their life cycle.
# Usage: scripts/ops/card.sh CARD_ID [TAPS]   (TAPS: how many recent taps, default 10)
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] || die "usage: $0 CARD_ID [TAPS]"
card="$(json_string "$1")"
taps="${2:-10}"
[[ "$taps" =~ ^[0-9]+$ ]] || die "TAPS must be a number"
rpc "$ISSUER_ADDRESS" "$ISSUER_SERVICE/GetCard" "{\"card_id\": $card}"
rpc "$ISSUER_ADDRESS" "$ISSUER_SERVICE/ListCardTaps" "{\"card_id\": $card, \"page_size\": $taps}"
