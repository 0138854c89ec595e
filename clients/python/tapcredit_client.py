"""A small Python client of tapcredit, on stubs generated from proto/.

Stubs are generated, not committed: generate_stubs() runs Debian's protoc with
the gRPC Python plugin (packages protobuf-compiler, protobuf-compiler-grpc,
python3-grpcio, python3-protobuf) into a directory and puts it on sys.path.

It also carries the card's side of the zero-amount debit (the MAC a genuine
card computes, byte for byte as common/card.ts does), and decodes the rich
error details (google.rpc.Status with ErrorInfo and BadRequest) that every
tapcredit error carries in the grpc-status-details-bin trailer.
"""

import hashlib
import hmac
import importlib
import os
import secrets
import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"
# Debian's protobuf-compiler ships the well-known types (google/protobuf/*.proto) here.
WELL_KNOWN_TYPES = Path("/usr/include")
GRPC_PYTHON_PLUGIN = "/usr/bin/grpc_python_plugin"

MAC_BYTES = 8
TERMINAL_RANDOM_BYTES = 8


def generate_stubs(out_dir, proto_dir=PROTO_DIR):
    """Generates *_pb2.py and *_pb2_grpc.py for every proto in proto_dir into out_dir and imports from there."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(proto_dir)) for p in Path(proto_dir).rglob("*.proto"))
    subprocess.run(
        [
            "protoc",
            f"-I{proto_dir}",
            f"-I{WELL_KNOWN_TYPES}",
            f"--plugin=protoc-gen-grpc_python={GRPC_PYTHON_PLUGIN}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ],
        check=True,
    )
    use_stubs(out)


def use_stubs(out_dir):
    """Makes stubs generated earlier importable."""
    path = str(Path(out_dir).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    # google is a namespace package shared with the installed google.protobuf.
    importlib.invalidate_caches()


def pb(module):
    """Imports a generated module, e.g. pb("tapcredit.issuer.v1.issuer_pb2")."""
    return importlib.import_module(module)


# --- the card: what a genuine IC card computes (see common/card.ts) ---


def _length_prefixed(value):
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return struct.pack(">H", len(data)) + data


def _uint64(value):
    return struct.pack(">Q", int(value))


def card_mac(card_key, card_id, counter, amount, terminal_id, terminal_sequence, terminal_random):
    """HMAC-SHA256 with the card's key over the length-prefixed and big-endian fields, truncated to 8 bytes."""
    message = b"".join(
        [
            _length_prefixed(card_id),
            _uint64(counter),
            _uint64(amount),
            _length_prefixed(terminal_id),
            _uint64(terminal_sequence),
            _length_prefixed(terminal_random),
        ]
    )
    return hmac.new(bytes(card_key), message, hashlib.sha256).digest()[:MAC_BYTES]


class Card:
    """A virtual card: its id, issuer code, expiry, counter and diversified key."""

    def __init__(self, card_id, issuer_code, expires_on, counter, card_key):
        self.card_id = card_id
        self.issuer_code = issuer_code
        self.expires_on = expires_on
        self.counter = int(counter)
        self.card_key = bytes(card_key)

    def zero_amount_debit(self, terminal_id, terminal_sequence, terminal_random=None):
        """The card's answer to a reader: it advances its counter and proves itself with a MAC (a CardProof)."""
        card = pb("tapcredit.type.v1.card_pb2")
        terminal_random = terminal_random or secrets.token_bytes(TERMINAL_RANDOM_BYTES)
        self.counter += 1
        return card.CardProof(
            card_id=self.card_id,
            counter=self.counter,
            terminal_id=terminal_id,
            terminal_sequence=int(terminal_sequence),
            terminal_random=terminal_random,
            mac=card_mac(self.card_key, self.card_id, self.counter, 0, terminal_id, terminal_sequence, terminal_random),
        )


# --- errors ---


def error_details(rpc_error):
    """The google.rpc.Status of a failed call with its ErrorInfo and BadRequest unpacked (either may be None)."""
    status_pb2 = pb("google.rpc.status_pb2")
    details_pb2 = pb("google.rpc.error_details_pb2")
    raw = dict(rpc_error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if raw is None:
        return None
    status = status_pb2.Status.FromString(raw)
    error_info = bad_request = None
    for any_detail in status.details:
        if any_detail.Is(details_pb2.ErrorInfo.DESCRIPTOR):
            error_info = details_pb2.ErrorInfo()
            any_detail.Unpack(error_info)
        elif any_detail.Is(details_pb2.BadRequest.DESCRIPTOR):
            bad_request = details_pb2.BadRequest()
            any_detail.Unpack(bad_request)
    return {"status": status, "error_info": error_info, "bad_request": bad_request}


# --- connecting ---


def channel(address, ca=None, cert=None, key=None):
    """A channel to a tapcredit server: plaintext, or mTLS when the CA, certificate and key files are given."""
    if ca:
        read = lambda path: Path(path).read_bytes() if path else None
        credentials = grpc().ssl_channel_credentials(read(ca), read(key), read(cert))
        return grpc().secure_channel(address, credentials)
    return grpc().insecure_channel(address)


def grpc():
    return importlib.import_module("grpc")


def traceparent():
    """A new W3C traceparent, so the servers' logs of one call can be found by its trace id."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


class Tapcredit:
    """Stubs of the three services, every call with a deadline and a traceparent."""

    def __init__(self, terminal=None, issuer=None, authorizer=None, deadline_s=10.0, **tls):
        self.deadline_s = deadline_s
        self.trace = traceparent()
        if terminal:
            self.terminal = pb("tapcredit.terminal.v1.terminal_pb2_grpc").TerminalServiceStub(channel(terminal, **tls))
        if issuer:
            self.issuer = pb("tapcredit.issuer.v1.issuer_pb2_grpc").IssuerServiceStub(channel(issuer, **tls))
        if authorizer:
            self.authorizer = pb("tapcredit.authorizer.v1.authorizer_pb2_grpc").AuthorizerServiceStub(channel(authorizer, **tls))

    def call(self, method, request):
        """method: a bound stub method, e.g. client.issuer.GetCard."""
        return method(request, timeout=self.deadline_s, metadata=(("traceparent", self.trace),))


def card_from_json(data):
    """A Card from the JSON card image the phone CLI and the tests write (card_key in base64)."""
    import base64

    key = data.get("cardKey", data.get("card_key"))
    return Card(
        card_id=data.get("cardId", data.get("card_id")),
        issuer_code=data.get("issuerCode", data.get("issuer_code")),
        expires_on=data.get("expiresOn", data.get("expires_on")),
        counter=data.get("counter", 0),
        card_key=base64.b64decode(key),
    )


if os.environ.get("TAPCREDIT_STUBS"):
    use_stubs(os.environ["TAPCREDIT_STUBS"])
