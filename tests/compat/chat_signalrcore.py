"""The chat scenario with the Python client signalrcore, over WebSockets and the JSON hub
protocol, against a running Herald.

Usage: python chat_signalrcore.py BASE_URL ALICE_TOKEN [ws|lp] [json|msgpack]
Exits 0 when every step behaved as expected, 1 with the failing step otherwise.
"""

import logging
import queue
import sys
import threading
import time

from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol
from signalrcore.types import HttpTransportType

TIMEOUT = 10.0
METHODS = ["joined", "left", "broadcastMessage", "groupMessage", "userMessage"]


class Client:
    """A connection whose received invocations are queued per method."""

    def __init__(self, name, base, token=None, transport="ws", protocol="json"):
        self.name = name
        self.transport = transport
        self.queues = {m: queue.Queue() for m in METHODS}
        self.errors = queue.Queue()
        self.opened = threading.Event()
        options = {"access_token_factory": (lambda: token)} if token else {}
        if transport == "lp":
            options["transport"] = HttpTransportType.long_polling
        builder = (
            HubConnectionBuilder()
            .with_url(f"{base}/hubs/chat", options=options)
            .configure_logging(logging.ERROR)
        )
        if protocol == "msgpack":
            builder = builder.with_hub_protocol(MessagePackHubProtocol())
        self.hub = builder.build()
        for m in METHODS:
            self.hub.on(m, self.queues[m].put)
        self.hub.on_open(self.opened.set)
        self.hub.on_error(self.errors.put)

    def start(self):
        self.hub.start()
        if not self.opened.wait(TIMEOUT):
            raise AssertionError(f"{self.name}: did not open")
        return self

    def next(self, method, match=lambda args: True):
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no {method} within {TIMEOUT} s")
            try:
                # signalrcore over long polling handles one record per poll response and
                # keeps the rest until another poll returns: keep traffic flowing.
                wait = min(left, 0.3) if self.transport == "lp" else left
                args = self.queues[method].get(timeout=wait)
            except queue.Empty:
                if self.transport == "lp":
                    self.hub.send("Echo", ["nudge"])
                continue
            if match(args):
                return args

    def invoke(self, method, args):
        """A blocking invocation; returns the completion's result."""
        done = queue.Queue()
        self.hub.send(method, args, on_invocation=done.put)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                wait = 0.3 if self.transport == "lp" else TIMEOUT
                return done.get(timeout=wait).result
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise
                self.hub.send("Echo", ["nudge"])


def step(name, body):
    try:
        body()
        print(f"ok - {name}", flush=True)
    except Exception as e:  # noqa: BLE001 - every failure ends the run with its step
        print(f"not ok - {name}: {e!r}", flush=True)
        sys.exit(1)


def main():
    base, alice_token = sys.argv[1], sys.argv[2]
    transport = sys.argv[3] if len(sys.argv) > 3 else "ws"
    protocol = sys.argv[4] if len(sys.argv) > 4 else "json"
    alice = Client("alice", base, alice_token, transport, protocol)
    bob = Client("bob", base, None, transport, protocol)

    def presence():
        alice.start()
        args = alice.next("joined")
        assert args[1] == "alice" and args[2] == 1, args
        bob.start()
        args = bob.next("joined")
        assert args[1] is None and args[2] == 2, args
        assert alice.next("joined") == args

    def broadcast():
        bob.hub.send("Send", ["bob", "hello"])
        for c in (alice, bob):
            assert c.next("broadcastMessage") == ["bob", "hello"]

    def groups():
        alice.invoke("JoinGroup", ["room"])
        bob.hub.send("SendToGroup", ["room", "bob", "to the room"])
        assert alice.next("groupMessage") == ["room", "bob", "to the room"]
        bob.invoke("Send", ["marker", "m1"])
        bob.next("broadcastMessage", lambda a: a[1] == "m1")
        assert bob.queues["groupMessage"].empty()

    def users():
        bob.hub.send("SendToUser", ["alice", "psst"])
        assert alice.next("userMessage") == [None, "psst"]

    def echo_and_count():
        value = {"text": "é", "n": [1, 2.5], "ok": True}
        assert alice.invoke("Echo", [value]) == value
        assert bob.invoke("GetCount", []) == 2

    def unknown_method():
        bob.hub.send("Nope", [1])
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                error = bob.errors.get(timeout=0.3)
                break
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise
                bob.hub.send("Echo", ["nudge"])
        assert error.error == "Method 'Nope' does not exist.", error.error

    def left():
        bob.hub.stop()
        args = alice.next("left")
        assert args[1] is None and args[2] == 1, args

    step("presence", presence)
    step("broadcast", broadcast)
    step("groups", groups)
    step("users", users)
    step("echo and count", echo_and_count)
    step("unknown method", unknown_method)
    step("left", left)
    alice.hub.stop()
    print("all steps passed", flush=True)


if __name__ == "__main__":
    main()
