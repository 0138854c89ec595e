#!/usr/bin/env bash
# A terminal's taps the issuer has not acknowledged yet (oldest first), with
# its counts, last forward time and deny-list version.
# Usage: scripts/ops/unsent-taps.sh [LIMIT]   (default 100; TERMINAL_ADDRESS picks the terminal)
source "$(dirname "$0")/lib.sh"
limit="${1:-100}"
[[ "$limit" =~ ^[0-9]+$ ]] || die "LIMIT must be a number"
rpc "$TERMINAL_ADDRESS" "$TERMINAL_SERVICE/GetTerminalStatus" "{\"unsent_taps_limit\": $limit}"
