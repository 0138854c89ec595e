#!/usr/bin/env python3
"""Checks the Python card emulator against docs/card-protocol-vectors.json.

  /usr/bin/python3 clients/python/test_card_protocol.py --stubs /tmp/tapcredit-stubs

The key, the MAC input and MAC, the flag payload, and the card's answers to
the exchange's commands, byte for byte (the answers with stubs generated
from proto/). Exits non-zero on any mismatch.
"""

import argparse
import json
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import card_emulator as ce  # noqa: E402
import tapcredit_client as tc  # noqa: E402

VECTORS = json.loads((HERE.parents[1] / "docs" / "card-protocol-vectors.json").read_text())
h = bytes.fromhex


class CardProtocolVectors(unittest.TestCase):
    def test_card_key(self):
        self.assertEqual(ce.diversify_card_key(h(VECTORS["masterKey"]), VECTORS["cardId"]).hex(), VECTORS["cardKey"])

    def test_macs(self):
        key = h(VECTORS["cardKey"])
        for m in VECTORS["macs"]:
            args = (m["cardId"], int(m["counter"]), int(m["amount"]), m["terminalId"], int(m["terminalSequence"]), h(m["terminalRandom"]))
            self.assertEqual(ce.mac_input(*args).hex(), m["macInput"], m["name"])
            self.assertEqual(ce.card_mac(key, *args).hex(), m["mac"], m["name"])

    def test_credit_flag_payload(self):
        f = VECTORS["creditFlag"]
        self.assertEqual(ce.credit_flag_payload(f["cardId"], f["agreementId"], f["version"], int(f["issuedAtMs"])).hex(), f["payload"])

    def test_exchange(self):
        card_pb2 = tc.pb("tapcredit.type.v1.card_pb2")
        terminal_pb2 = tc.pb("tapcredit.terminal.v1.terminal_pb2")
        f, ex = VECTORS["creditFlag"], VECTORS["exchange"]
        flag = card_pb2.CreditFlag(card_id=f["cardId"], agreement_id=f["agreementId"], version=f["version"], signature=h(f["signature"]))
        flag.issued_at.FromMilliseconds(int(f["issuedAtMs"]))
        image = card_pb2.CardImage(card_id=VECTORS["cardId"], issuer_code="CITY1", expires_on="2030-12-31", counter=7, card_key=h(VECTORS["cardKey"]))
        image.credit_flag.CopyFrom(flag)
        card = ce.CardEmulator(card_pb2, image)

        def answer(command_hex):
            command = terminal_pb2.PresentCardResponse.FromString(h(command_hex)).command
            return terminal_pb2.PresentCardRequest(answer=card.answer(command)).SerializeToString().hex()

        self.assertEqual(answer(ex["readCommand"]), ex["readAnswer"])
        self.assertEqual(answer(ex["debitCommand"]), ex["debitAnswer"])
        self.assertEqual(card.image.counter, 8)
        # The reader saw ACCEPT: COMPLETE, and the next READ shows the record.
        complete = card_pb2.CardCommand.FromString(h(ex["completeCommand"]))
        self.assertEqual(card.answer(complete).SerializeToString().hex(), ex["completeAnswer"])
        self.assertEqual(answer(ex["readCommand"]), ex["readAnswerAfterComplete"])
        refused = card_pb2.CardCommand(complete=card_pb2.CompleteCommand(tap_id="T0001:43", counter=9))
        self.assertEqual(card.answer(refused).status, ce.CARD_STATUS_REJECTED)

    def test_phone_read(self):
        card_pb2 = tc.pb("tapcredit.type.v1.card_pb2")
        m = next(m for m in VECTORS["macs"] if m["name"] == "phone enrollment read")
        image = card_pb2.CardImage(card_id=VECTORS["cardId"], issuer_code="CITY1", expires_on="2030-12-31", counter=0, card_key=h(VECTORS["cardKey"]))
        _read, proof = ce.read_for_enrollment(ce.CardEmulator(card_pb2, image), card_pb2, h(m["terminalRandom"]))
        self.assertEqual((proof.terminal_id, proof.terminal_sequence, proof.counter, proof.mac.hex()), (m["terminalId"], int(m["terminalSequence"]), int(m["counter"]), m["mac"]))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--stubs", required=True, help="directory for the generated stubs (made if missing)")
    args, rest = p.parse_known_args()
    tc.generate_stubs(args.stubs)
    unittest.main(argv=[sys.argv[0], *rest])
