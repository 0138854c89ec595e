"""A small Python client of tapcredit, on stubs generated from proto/.

Stubs are generated, not committed: generate_stubs() runs Debian's protoc with
the gRPC Python plugin (packages protobuf-compiler, protobuf-compiler-grpc,
python3-grpcio, python3-protobuf) into a directory and puts it on sys.path.

It presents a card at a terminal (the PresentCard stream, the card played by
card_emulator.py), and decodes the rich error details (google.rpc.Status
with ErrorInfo and BadRequest) that every tapcredit error carries in the
grpc-status-details-bin trailer.
"""

import importlib
import os
import secrets
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"
# Debian's protobuf-compiler ships the well-known types (google/protobuf/*.proto) here.
WELL_KNOWN_TYPES = Path("/usr/include")
GRPC_PYTHON_PLUGIN = "/usr/bin/grpc_python_plugin"


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


# --- the card at a gate ---


def present_card(client, card):
    """Holds the card to the terminal: answers each command of the PresentCard stream with the card; returns the TapOutcome.

    card: anything with answer(CardCommand) -> CardAnswer (card_emulator.CardEmulator).
    The card key stays with the card: only its answers go to the terminal.
    """
    import queue

    terminal_pb2 = pb("tapcredit.terminal.v1.terminal_pb2")
    answers = queue.Queue()

    def requests():
        while True:
            item = answers.get()
            if item is None:
                return
            yield item

    outcome = None
    try:
        for message in client.terminal.PresentCard(requests(), timeout=client.deadline_s, metadata=client.metadata()):
            if message.HasField("outcome"):
                outcome = message.outcome
                answers.put(None)
            elif message.HasField("command"):
                answers.put(terminal_pb2.PresentCardRequest(answer=card.answer(message.command)))
    finally:
        answers.put(None)
    if outcome is None:
        raise RuntimeError("the terminal ended the call without an outcome")
    if outcome.decision == terminal_pb2.DECISION_ACCEPT:
        # The gate opens: the reader writes COMPLETE to the card, so its record shows the ride (docs/card-protocol.md).
        card_pb2 = pb("tapcredit.type.v1.card_pb2")
        command = card_pb2.CardCommand(complete=card_pb2.CompleteCommand(tap_id=outcome.tap.tap_id, counter=outcome.tap.proof.counter))
        card.answer(command)
    return outcome


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


def describe_error(rpc_error):
    """One line for a failed call: the gRPC code, the message and the ErrorInfo reason."""
    details = error_details(rpc_error)
    info = details["error_info"] if details else None
    reason = f" (reason {info.reason})" if info and info.reason else ""
    return f"{rpc_error.code().name}: {rpc_error.details()}{reason}"


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

    def __init__(self, terminal=None, issuer=None, authorizer=None, deadline_s=10.0, trace=None, **tls):
        self.deadline_s = deadline_s
        self.trace = trace or traceparent()
        if terminal:
            self.terminal = pb("tapcredit.terminal.v1.terminal_pb2_grpc").TerminalServiceStub(channel(terminal, **tls))
        if issuer:
            self.issuer = pb("tapcredit.issuer.v1.issuer_pb2_grpc").IssuerServiceStub(channel(issuer, **tls))
        if authorizer:
            self.authorizer = pb("tapcredit.authorizer.v1.authorizer_pb2_grpc").AuthorizerServiceStub(channel(authorizer, **tls))

    # A rider's access token (AuthorizerService.SignIn), sent with every call
    # as "authorization: Bearer <token>" once set.
    access_token = None

    def metadata(self):
        if self.access_token:
            return (("traceparent", self.trace), ("authorization", f"Bearer {self.access_token}"))
        return (("traceparent", self.trace),)

    def call(self, method, request):
        """method: a bound stub method, e.g. client.issuer.GetCard."""
        return method(request, timeout=self.deadline_s, metadata=self.metadata())


if os.environ.get("TAPCREDIT_STUBS"):
    use_stubs(os.environ["TAPCREDIT_STUBS"])
