#!/usr/bin/env python3
"""Enrollment and a ride through tapcredit's gRPC API from Python, as deployed (mTLS).

Each step with the identity the servers' access policies require:
  1. ops:   the authorizer opens the rider's account, tops it up and sets the
            rider's password; the rider signs in (phone, SignIn) for an access token;
  2. phone: the phone reads its card (card_emulator.py plays the card: READ,
            then a zero-amount debit for reader "phone") and enrolls it at
            the issuer; the credit flag goes into the card file;
  3. phone: the card is held to the terminal's reader (PresentCard): the
            card answers the terminal's commands, its key never leaves it;
            the terminal decides offline and forwards the tap itself;
  4. ops:   the issuer's ListCardTaps, until the tap is SETTLED;
  5. phone: a bad request, to show the error details (field violations).
Prints one JSON object per step. Any failure prints one line,
"error: <gRPC code>: <message> (reason <REASON>)", and exits 1.

  /usr/bin/python3 clients/python/enroll_and_ride.py --card card.json --stubs /tmp/tapcredit-stubs
      [--certs-dir data/certs | --insecure] [--terminal localhost:50051 --issuer ... --authorizer ...]
"""

import argparse
import json
import os
import secrets
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import card_emulator as ce  # noqa: E402
import tapcredit_client as tc  # noqa: E402


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


class Failure(Exception):
    pass


def identity(args, role):
    """mTLS files of an identity: <certs dir>/ca.pem, <role>.pem and <role>.key; none with --insecure."""
    if args.insecure:
        return {}
    files = {"ca": Path(args.certs_dir) / "ca.pem", "cert": Path(args.certs_dir) / f"{role}.pem", "key": Path(args.certs_dir) / f"{role}.key"}
    for path in files.values():
        if not path.is_file():
            raise Failure(f"no {path}: run `npm run certs` (or npm start once), pass --certs-dir, or --insecure for a plaintext system")
    return {k: str(v) for k, v in files.items()}


def main(args):
    tc.generate_stubs(args.stubs)
    authorizer_pb2 = tc.pb("tapcredit.authorizer.v1.authorizer_pb2")
    card_pb2 = tc.pb("tapcredit.type.v1.card_pb2")
    issuer_pb2 = tc.pb("tapcredit.issuer.v1.issuer_pb2")
    money_pb2 = tc.pb("tapcredit.type.v1.money_pb2")
    rider_pb2 = tc.pb("tapcredit.type.v1.rider_pb2")
    terminal_pb2 = tc.pb("tapcredit.terminal.v1.terminal_pb2")

    # One trace for the whole ride, whichever identity makes the call.
    ops = tc.Tapcredit(issuer=args.issuer, authorizer=args.authorizer, **identity(args, "ops"))
    phone = tc.Tapcredit(issuer=args.issuer, terminal=args.terminal, authorizer=args.authorizer, trace=ops.trace, **identity(args, "phone"))
    try:
        card = ce.CardEmulator.from_file(card_pb2, args.card)
    except (OSError, ValueError) as err:
        raise Failure(f"cannot read the card file {args.card}: {err}")
    rider = rider_pb2.Rider(name=args.name, phone_number=args.phone)
    money = lambda units: money_pb2.Money(currency_code=args.currency, minor_units=units)
    emit("trace", traceparent=ops.trace)

    # 1. The rider's payment account, with funds (ops).
    opened = ops.call(
        ops.authorizer.OpenAccount,
        authorizer_pb2.OpenAccountRequest(account_id=args.account_id, holder=rider, currency_code=args.currency, credit_limit=money(0)),
    )
    topped = ops.call(
        ops.authorizer.TopUp,
        authorizer_pb2.TopUpRequest(request_id=f"py-topup-{uuid.uuid4()}", account_id=args.account_id, amount=money(args.top_up)),
    )
    emit("account", account_id=opened.account.account_id, balance=topped.account.balance.minor_units)

    # The rider signs in (phone, at the authorizer; ops set the password): rider calls carry the access token.
    password = f"py-{secrets.token_urlsafe(12)}"
    ops.call(ops.authorizer.SetRiderPassword, authorizer_pb2.SetRiderPasswordRequest(account_id=args.account_id, new_password=password))
    signed = phone.call(phone.authorizer.SignIn, authorizer_pb2.SignInRequest(account_id=args.account_id, password=password, audience=args.issuer_id))
    phone.access_token = signed.tokens.access_token
    emit("signed_in", account_id=args.account_id)

    # 2. Enrollment (phone): the phone reads its own card, the issuer checks the proof and signs a credit flag.
    read, proof = ce.read_for_enrollment(card, card_pb2, secrets.token_bytes(ce.TERMINAL_RANDOM_BYTES))
    enrolled = phone.call(
        phone.issuer.EnrollCard,
        issuer_pb2.EnrollCardRequest(
            request_id=f"py-enroll-{uuid.uuid4()}",
            card=issuer_pb2.CardReading(issuer_code=read.issuer_code, expires_on=read.expires_on, proof=proof),
            rider=rider,
            account_id=args.account_id,
        ),
    )
    flag = enrolled.credit_flag
    card.write_credit_flag(flag)
    emit(
        "enrolled",
        card_id=enrolled.enrollment.card_id,
        agreement_id=enrolled.enrollment.agreement_id,
        flag={"card_id": flag.card_id, "agreement_id": flag.agreement_id, "version": flag.version, "signature": flag.signature.hex()},
    )

    # 3. The ride (phone, as the gate's reader stands in): the terminal reads the card, challenges it, decides offline.
    outcome = tc.present_card(phone, card)
    emit(
        "tap",
        decision=terminal_pb2.Decision.Name(outcome.decision),
        decline_reason=terminal_pb2.DeclineReason.Name(outcome.decline_reason) if outcome.decline_reason else None,
        tap_id=outcome.tap.tap_id or None,
        counter=card.image.counter,
    )
    if outcome.decision != terminal_pb2.DECISION_ACCEPT:
        raise Failure(f"the terminal declined the card: {terminal_pb2.DeclineReason.Name(outcome.decline_reason)}")

    # 4. The issuer's view (ops): the terminal forwards the tap, the fare is debited and settled.
    deadline = time.monotonic() + args.settle_timeout
    while True:
        taps = ops.call(ops.issuer.ListCardTaps, issuer_pb2.ListCardTapsRequest(card_id=read.card_id, page_size=10)).taps
        mine = [t for t in taps if t.tap.tap_id == outcome.tap.tap_id]
        if mine and mine[0].state == issuer_pb2.TAP_STATE_SETTLED:
            break
        if time.monotonic() > deadline:
            state = issuer_pb2.TapState.Name(mine[0].state) if mine else "not at the issuer"
            raise Failure(f"tap {outcome.tap.tap_id} not SETTLED within {args.settle_timeout} s (it is {state})")
        time.sleep(0.1)
    got = ops.call(ops.issuer.GetCard, issuer_pb2.GetCardRequest(card_id=read.card_id)).card
    emit(
        "settled",
        card_state=issuer_pb2.CardState.Name(got.state),
        last_counter=got.last_counter,
        account_id=got.enrollment.account_id,
        taps=[{"tap_id": t.tap.tap_id, "state": issuer_pb2.TapState.Name(t.state), "charged": t.charged.minor_units} for t in taps],
    )

    # 5. A bad request (phone): refused with INVALID_ARGUMENT, the details say which fields and why.
    try:
        phone.call(
            phone.issuer.EnrollCard,
            issuer_pb2.EnrollCardRequest(request_id="", rider=rider_pb2.Rider(name=args.name, phone_number="not a phone"), account_id=args.account_id),
        )
        emit("bad_request", error=None)
    except tc.grpc().RpcError as err:
        details = tc.error_details(err)
        info, bad = details["error_info"], details["bad_request"]
        emit(
            "bad_request",
            code=err.code().name,
            message=details["status"].message,
            reason=info.reason if info else None,
            domain=info.domain if info else None,
            field_violations=[{"field": v.field, "description": v.description} for v in (bad.field_violations if bad else [])],
        )


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--card", required=True, help="card image file (as `npm run phone -- card issue` writes it); the card's counter and flag are written back")
    p.add_argument("--stubs", required=True, help="directory for the generated stubs (made if missing)")
    p.add_argument("--terminal", default="localhost:50051")
    p.add_argument("--issuer", default="localhost:50052")
    p.add_argument("--authorizer", default="localhost:50053")
    p.add_argument("--issuer-id", default="issuer-1", help="the issuer's id: the audience of the rider's access token")
    p.add_argument("--certs-dir", default=os.environ.get("TAPCREDIT_CERTS_DIR", "data/certs"), help="ca.pem, ops.pem/.key and phone.pem/.key (default data/certs)")
    p.add_argument("--insecure", action="store_true", default=os.environ.get("TAPCREDIT_INSECURE") == "1", help="plaintext (a system started with --insecure)")
    p.add_argument("--account-id", default="py-rider-1")
    p.add_argument("--name", default="Python Rider")
    p.add_argument("--phone", default="+8613800000999")
    p.add_argument("--currency", default="CNY")
    p.add_argument("--top-up", type=int, default=10000, help="minor units")
    p.add_argument("--settle-timeout", type=float, default=30.0, help="seconds to wait for the tap to be SETTLED")
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    try:
        main(arguments)
    except Failure as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except Exception as err:  # noqa: BLE001 - one line for the user, never a traceback
        if isinstance(err, tc.grpc().RpcError) and hasattr(err, "code"):
            print(f"error: {tc.describe_error(err)}", file=sys.stderr)
        else:
            print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
