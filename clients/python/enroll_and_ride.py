#!/usr/bin/env python3
"""Enrollment and a ride through tapcredit's gRPC API from Python.

Opens the rider's account at the authorizer and tops it up, enrolls the card
at the issuer with a card proof computed here (the card's zero-amount debit),
reports one tap to the issuer as terminal TERMINAL_ID would, reads the card and
its taps back until the fare is debited, and shows the rich error details of
a bad request. Prints one JSON object per step.

  /usr/bin/python3 clients/python/enroll_and_ride.py --card card.json \\
      --issuer 127.0.0.1:50052 --authorizer 127.0.0.1:50053 --stubs /tmp/stubs
"""

import argparse
import datetime
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tapcredit_client as tc  # noqa: E402


def emit(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--card", required=True, help="card image JSON (as the phone CLI writes it)")
    p.add_argument("--issuer", default="127.0.0.1:50052")
    p.add_argument("--authorizer", default="127.0.0.1:50053")
    p.add_argument("--stubs", required=True, help="directory for the generated stubs (made if missing)")
    p.add_argument("--account-id", default="py-rider-1")
    p.add_argument("--name", default="Python Rider")
    p.add_argument("--phone", default="+8613800000999")
    p.add_argument("--currency", default="CNY")
    p.add_argument("--top-up", type=int, default=10000, help="minor units")
    p.add_argument("--fare", type=int, default=200, help="minor units")
    p.add_argument("--terminal-id", default="PY1")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    args = p.parse_args()

    tc.generate_stubs(args.stubs)
    authorizer_pb2 = tc.pb("tapcredit.authorizer.v1.authorizer_pb2")
    issuer_pb2 = tc.pb("tapcredit.issuer.v1.issuer_pb2")
    money_pb2 = tc.pb("tapcredit.type.v1.money_pb2")
    rider_pb2 = tc.pb("tapcredit.type.v1.rider_pb2")
    tap_pb2 = tc.pb("tapcredit.type.v1.tap_pb2")

    client = tc.Tapcredit(issuer=args.issuer, authorizer=args.authorizer, ca=args.ca, cert=args.cert, key=args.key)
    card = tc.card_from_json(json.loads(Path(args.card).read_text()))
    rider = rider_pb2.Rider(name=args.name, phone_number=args.phone)
    money = lambda units: money_pb2.Money(currency_code=args.currency, minor_units=units)
    emit("trace", traceparent=client.trace)

    # 1. The rider's payment account, with funds.
    opened = client.call(
        client.authorizer.OpenAccount,
        authorizer_pb2.OpenAccountRequest(account_id=args.account_id, holder=rider, currency_code=args.currency, credit_limit=money(0)),
    )
    topped = client.call(
        client.authorizer.TopUp,
        authorizer_pb2.TopUpRequest(request_id=f"py-topup-{uuid.uuid4()}", account_id=args.account_id, amount=money(args.top_up)),
    )
    emit("account", account_id=opened.account.account_id, balance=topped.account.balance.minor_units)

    # 2. Enrollment: the phone reads the card (a zero-amount debit for reader "phone") and asks the issuer.
    proof = card.zero_amount_debit("phone", 0)
    enrolled = client.call(
        client.issuer.EnrollCard,
        issuer_pb2.EnrollCardRequest(
            request_id=f"py-enroll-{uuid.uuid4()}",
            card=issuer_pb2.CardReading(issuer_code=card.issuer_code, expires_on=card.expires_on, proof=proof),
            rider=rider,
            account_id=args.account_id,
        ),
    )
    flag = enrolled.credit_flag
    emit(
        "enrolled",
        card_id=enrolled.enrollment.card_id,
        agreement_id=enrolled.enrollment.agreement_id,
        flag={"card_id": flag.card_id, "agreement_id": flag.agreement_id, "version": flag.version, "signature": flag.signature.hex()},
    )

    # 3. A ride: the tap a terminal accepted, reported to the issuer with the card's proof for that terminal.
    sequence = 1
    tap = tap_pb2.Tap(
        tap_id=f"{args.terminal_id}:{sequence}",
        terminal_id=args.terminal_id,
        terminal_sequence=sequence,
        card_id=card.card_id,
        agreement_id=enrolled.enrollment.agreement_id,
        fare=money(args.fare),
        proof=card.zero_amount_debit(args.terminal_id, sequence),
        traceparent=client.trace,
    )
    tap.tapped_at.FromDatetime(datetime.datetime.now(datetime.timezone.utc))
    reported = client.call(client.issuer.TapReport, issuer_pb2.TapReportRequest(terminal_id=args.terminal_id, taps=[tap]))
    result = reported.results[0]
    emit("tap_report", tap_id=result.tap_id, status=issuer_pb2.TapReportStatus.Name(result.status), reason=result.reason)

    # 4. Reads: the card and its tap, until the fare is debited (the issuer's outbox runs in the background).
    debited = {issuer_pb2.TAP_STATE_DEDUCTED, issuer_pb2.TAP_STATE_SETTLED}
    deadline = time.monotonic() + 15
    while True:
        taps = client.call(client.issuer.ListCardTaps, issuer_pb2.ListCardTapsRequest(card_id=card.card_id, page_size=10)).taps
        if (taps and taps[0].state in debited) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    got = client.call(client.issuer.GetCard, issuer_pb2.GetCardRequest(card_id=card.card_id)).card
    emit(
        "read",
        card_state=issuer_pb2.CardState.Name(got.state),
        last_counter=got.last_counter,
        account_id=got.enrollment.account_id,
        taps=[{"tap_id": t.tap.tap_id, "state": issuer_pb2.TapState.Name(t.state), "charged": t.charged.minor_units} for t in taps],
    )

    # 5. A bad request: refused with INVALID_ARGUMENT, the details say which fields and why.
    try:
        client.call(
            client.issuer.EnrollCard,
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


if __name__ == "__main__":
    main()
