// The chat scenario with the official SignalR JavaScript client (@microsoft/signalr), over
// WebSockets and the JSON hub protocol, against a running Herald.
//
// Usage: node chat.mjs BASE_URL ALICE_TOKEN CAROL_TOKEN [json|msgpack] [ws|sse|lp]
// Exits 0 when every step behaved as expected, 1 with the failing step otherwise.

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import assert from "node:assert/strict";

const [base, aliceToken, carolToken, protocol = "json", transportName = "ws"] = process.argv.slice(2);
const transport = {
  ws: signalR.HttpTransportType.WebSockets,
  sse: signalR.HttpTransportType.ServerSentEvents,
  lp: signalR.HttpTransportType.LongPolling,
}[transportName];
if (!base || !aliceToken || !carolToken) {
  console.error("usage: node chat.mjs BASE_URL ALICE_TOKEN CAROL_TOKEN [json|msgpack] [ws|sse|lp]");
  process.exit(2);
}

const STEP_TIMEOUT_MS = 10_000;
const HANDLED = ["joined", "left", "broadcastMessage", "groupMessage", "userMessage"];

/** A client whose every received invocation is queued per method, for tests to await. */
class Client {
  constructor(name, token) {
    this.name = name;
    this.queues = new Map(HANDLED.map((m) => [m, []]));
    this.waiters = [];
    const options = {
      transport,
      ...(token ? { accessTokenFactory: () => token } : {}),
    };
    let builder = new signalR.HubConnectionBuilder()
      .withUrl(`${base}/hubs/chat`, options)
      .configureLogging(signalR.LogLevel.Warning);
    if (protocol === "msgpack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
    this.connection = builder.build();
    for (const method of HANDLED) {
      this.connection.on(method, (...args) => {
        this.queues.get(method).push(args);
        this.waiters.splice(0).forEach((wake) => wake());
      });
    }
  }

  async start() {
    await this.connection.start();
    return this;
  }

  get id() {
    return this.connection.connectionId;
  }

  /** The next `method` call whose arguments satisfy `match`; earlier ones are dropped. */
  async next(method, match = () => true) {
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    for (;;) {
      const queue = this.queues.get(method);
      while (queue.length) {
        const args = queue.shift();
        if (match(args)) return args;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: no ${method} within ${STEP_TIMEOUT_MS} ms`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  /** Asserts that no `method` call is queued. */
  none(method) {
    assert.deepEqual(this.queues.get(method), [], `${this.name} received an unexpected ${method}`);
  }
}

async function step(name, body) {
  try {
    await body();
    console.log(`ok - ${name}`);
  } catch (e) {
    console.error(`not ok - ${name}: ${e.stack || e}`);
    process.exit(1);
  }
}

const alice = new Client("alice", aliceToken);
const bob = new Client("bob", null);
const carol = new Client("carol", carolToken);

await step("presence: joined with user ids and counts", async () => {
  await alice.start();
  assert.deepEqual(await alice.next("joined"), [alice.id, "alice", 1]);
  await bob.start();
  assert.deepEqual(await bob.next("joined"), [bob.id, null, 2]);
  assert.deepEqual(await alice.next("joined"), [bob.id, null, 2]);
  await carol.start();
  for (const c of [alice, bob, carol]) {
    assert.deepEqual(await c.next("joined"), [carol.id, "carol", 3]);
  }
});

await step("Send broadcasts to everyone, the caller included", async () => {
  await bob.connection.invoke("Send", "bob", "hello");
  for (const c of [alice, bob, carol]) {
    assert.deepEqual(await c.next("broadcastMessage"), ["bob", "hello"]);
  }
  await alice.connection.send("Send", "alice", "fire and forget");
  for (const c of [alice, bob, carol]) {
    assert.deepEqual(await c.next("broadcastMessage"), ["alice", "fire and forget"]);
  }
});

await step("groups: JoinGroup, SendToGroup, LeaveGroup", async () => {
  await alice.connection.invoke("JoinGroup", "room");
  await carol.connection.invoke("JoinGroup", "room");
  await bob.connection.invoke("SendToGroup", "room", "bob", "to the room");
  for (const c of [alice, carol]) {
    assert.deepEqual(await c.next("groupMessage"), ["room", "bob", "to the room"]);
  }
  await carol.connection.invoke("LeaveGroup", "room");
  await alice.connection.invoke("SendToGroup", "room", "alice", "only me");
  assert.deepEqual(await alice.next("groupMessage"), ["room", "alice", "only me"]);
  // A marker broadcast proves nothing else was on its way.
  await bob.connection.invoke("Send", "marker", "m1");
  for (const c of [bob, carol]) {
    await c.next("broadcastMessage", (a) => a[1] === "m1");
    c.none("groupMessage");
  }
});

await step("SendToUser reaches the user with the sender's id", async () => {
  await bob.connection.invoke("SendToUser", "alice", "psst");
  assert.deepEqual(await alice.next("userMessage"), [null, "psst"]);
  await carol.connection.invoke("SendToUser", "alice", "hi");
  assert.deepEqual(await alice.next("userMessage"), ["carol", "hi"]);
  await bob.connection.invoke("Send", "marker", "m2");
  for (const c of [bob, carol]) {
    await c.next("broadcastMessage", (a) => a[1] === "m2");
    c.none("userMessage");
  }
});

await step("Echo and GetCount complete with results", async () => {
  const value = { text: "é ✓", n: [1, 2.5, -3], ok: true, none: null };
  assert.deepEqual(await alice.connection.invoke("Echo", value), value);
  if (protocol === "msgpack") {
    // Binary survives a MessagePack round trip.
    const bytes = new Uint8Array([0, 1, 2, 255]);
    assert.deepEqual(Array.from(await alice.connection.invoke("Echo", bytes)), [0, 1, 2, 255]);
  }
  assert.equal(await bob.connection.invoke("GetCount"), 3);
});

await step("an undeclared method fails with the SignalR error", async () => {
  await assert.rejects(bob.connection.invoke("Nope", 1), (e) => {
    assert.match(e.message, /Method 'Nope' does not exist\./);
    return true;
  });
  // The connection is still usable.
  assert.equal(await bob.connection.invoke("Echo", "after"), "after");
});

await step("left: the others hear who left, with the new count", async () => {
  const carolId = carol.id;
  await carol.connection.stop();
  for (const c of [alice, bob]) {
    assert.deepEqual(await c.next("left"), [carolId, "carol", 2]);
  }
});

await alice.connection.stop();
await bob.connection.stop();
console.log("all steps passed");
