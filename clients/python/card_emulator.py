"""A tapcredit card in Python, written from docs/card-protocol.md alone.

The cryptography is the standard library's (hmac, hashlib, struct): the card
key diversification (section 1), the debit MAC (section 2) and the credit
flag's signed payload (section 5, for checking the vectors; a card never
verifies signatures). CardEmulator answers reader commands (section 4) from
a card image file as the phone CLI writes it (proto JSON of CardImage): READ
with the card's data, a debit with the counter advanced and the MAC. The
card key never leaves it.
"""

import hashlib
import hmac
import struct
from pathlib import Path

CARD_KEY_TAG = b"tapcredit/card-key/v1\x00"
CREDIT_FLAG_TAG = b"tapcredit/credit-flag/v1\x00"
CARD_KEY_BYTES = 16
MAC_BYTES = 8
TERMINAL_RANDOM_BYTES = 8
COUNTER_MAX = 2**63 - 1

# CardStatus (proto/tapcredit/type/v1/card.proto)
CARD_STATUS_OK = 1
CARD_STATUS_COMMAND_NOT_SUPPORTED = 2
CARD_STATUS_REJECTED = 3

# The phone app as a reader of its own card (section 3).
PHONE_READER_ID = "phone"
PHONE_TERMINAL_SEQUENCE = 0


def lp(value):
    """A length-prefixed field: u16 big-endian length, then the bytes (strings as UTF-8)."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(data) > 0xFFFF:
        raise ValueError("a length-prefixed field holds at most 65535 bytes")
    return struct.pack(">H", len(data)) + data


def u64(value):
    return struct.pack(">Q", int(value))


def diversify_card_key(master_key, card_id):
    """card_key = HMAC-SHA256(master_key, "tapcredit/card-key/v1" || 0x00 || card_id)[0:16]"""
    return hmac.new(bytes(master_key), CARD_KEY_TAG + card_id.encode("utf-8"), hashlib.sha256).digest()[:CARD_KEY_BYTES]


def mac_input(card_id, counter, amount, terminal_id, terminal_sequence, terminal_random):
    return b"".join([lp(card_id), u64(counter), u64(amount), lp(terminal_id), u64(terminal_sequence), lp(terminal_random)])


def card_mac(card_key, card_id, counter, amount, terminal_id, terminal_sequence, terminal_random):
    """HMAC-SHA256(card_key, mac_input)[0:8]"""
    message = mac_input(card_id, counter, amount, terminal_id, terminal_sequence, terminal_random)
    return hmac.new(bytes(card_key), message, hashlib.sha256).digest()[:MAC_BYTES]


def credit_flag_payload(card_id, agreement_id, version, issued_at_ms):
    """The bytes the issuer signs with Ed25519 (version 1)."""
    return CREDIT_FLAG_TAG + lp(card_id) + lp(agreement_id) + struct.pack(">I", int(version)) + u64(issued_at_ms)


class CardEmulator:
    """A card answering CardCommand messages with CardAnswer messages.

    card_pb2 is the generated module of tapcredit/type/v1/card.proto; image is
    a CardImage message. on_change(image) runs after each debit and flag write,
    before the answer leaves the card (a card file writes itself back there).
    """

    def __init__(self, card_pb2, image, on_change=None):
        self.pb = card_pb2
        self.image = image
        self.on_change = on_change

    @classmethod
    def from_file(cls, card_pb2, path):
        """A card kept in a card image file (proto JSON), rewritten after every change."""
        from google.protobuf import json_format

        path = Path(path)
        image = json_format.Parse(path.read_text(), card_pb2.CardImage())

        def write(img):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json_format.MessageToJson(img, indent=2) + "\n")
            tmp.chmod(0o600)
            tmp.replace(path)

        return cls(card_pb2, image, write)

    def answer(self, command):
        kind = command.WhichOneof("command")
        if kind == "read":
            c = self.image
            read = self.pb.ReadCardAnswer(card_id=c.card_id, issuer_code=c.issuer_code, expires_on=c.expires_on, counter=c.counter)
            if c.HasField("credit_flag"):
                read.credit_flag.CopyFrom(c.credit_flag)
            if c.HasField("last_completed"):
                read.last_completed.CopyFrom(c.last_completed)
            return self.pb.CardAnswer(status=CARD_STATUS_OK, read=read)
        if kind == "debit":
            return self._debit(command.debit)
        if kind == "complete":
            return self._complete(command.complete)
        return self.pb.CardAnswer(status=CARD_STATUS_COMMAND_NOT_SUPPORTED)

    def _complete(self, cmd):
        """COMPLETE: a reader saw this tap accepted; the card keeps the record of the highest counter."""
        if not cmd.tap_id or cmd.counter < 1 or cmd.counter > self.image.counter:
            return self.pb.CardAnswer(status=CARD_STATUS_REJECTED)
        held = self.image.last_completed if self.image.HasField("last_completed") else None
        if held is None or held.counter < cmd.counter:
            self.image.last_completed.CopyFrom(self.pb.CompletedTap(tap_id=cmd.tap_id, counter=cmd.counter))
            self._changed()
        answer = self.pb.CompleteAnswer()
        answer.last_completed.CopyFrom(self.image.last_completed)
        return self.pb.CardAnswer(status=CARD_STATUS_OK, complete=answer)

    def _debit(self, cmd):
        counter = self.image.counter + 1
        if not cmd.terminal_id or len(cmd.terminal_random) != TERMINAL_RANDOM_BYTES or counter > COUNTER_MAX:
            return self.pb.CardAnswer(status=CARD_STATUS_REJECTED)
        mac = card_mac(self.image.card_key, self.image.card_id, counter, cmd.amount, cmd.terminal_id, cmd.terminal_sequence, cmd.terminal_random)
        # The counter is committed before the answer leaves the card.
        self.image.counter = counter
        self._changed()
        return self.pb.CardAnswer(status=CARD_STATUS_OK, debit=self.pb.DebitAnswer(counter=counter, mac=mac))

    def write_credit_flag(self, flag):
        """WRITE of the designated storage area (the phone app, after enrollment)."""
        self.image.credit_flag.CopyFrom(flag)
        self._changed()

    def _changed(self):
        if self.on_change:
            self.on_change(self.image)


def read_for_enrollment(card, card_pb2, terminal_random):
    """The phone app as reader of its own card: READ, then a zero-amount debit for reader "phone", sequence 0.

    Returns (ReadCardAnswer, CardProof) for EnrollCard.
    """
    read = card.answer(card_pb2.CardCommand(read=card_pb2.ReadCardCommand()))
    if read.status != CARD_STATUS_OK:
        raise RuntimeError(f"the card refused READ (status {read.status})")
    debit_cmd = card_pb2.DebitCommand(amount=0, terminal_id=PHONE_READER_ID, terminal_sequence=PHONE_TERMINAL_SEQUENCE, terminal_random=terminal_random)
    debit = card.answer(card_pb2.CardCommand(debit=debit_cmd))
    if debit.status != CARD_STATUS_OK:
        raise RuntimeError(f"the card refused the zero-amount debit (status {debit.status})")
    proof = card_pb2.CardProof(
        card_id=read.read.card_id,
        counter=debit.debit.counter,
        terminal_id=PHONE_READER_ID,
        terminal_sequence=PHONE_TERMINAL_SEQUENCE,
        terminal_random=terminal_random,
        mac=debit.debit.mac,
    )
    return read.read, proof
