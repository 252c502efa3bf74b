// A burst from the official SignalR JavaScript client (@microsoft/signalr): 400 `send`s of
// 20 KB texts in a loop. The client queues them while a send is in flight and sends them
// concatenated as one transport message (an 8 MB WebSocket message, or one POST body on long
// polling). Every message must reach the sender (the broadcast includes it) and a second
// client, in order, and neither may be closed.
//
// Usage: node burst.mjs BASE_URL [ws|lp|sse] [json|msgpack]
// Exits 0 when every step behaved as expected, 1 with the failing step otherwise.

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import assert from "node:assert/strict";

const [base, transportName = "ws", protocol = "json"] = process.argv.slice(2);
const transport = {
  ws: signalR.HttpTransportType.WebSockets,
  sse: signalR.HttpTransportType.ServerSentEvents,
  lp: signalR.HttpTransportType.LongPolling,
}[transportName];
const COUNT = 400;
const SIZE = 20_000;
const DEADLINE_MS = 60_000;

function connect(name) {
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(`${base}/hubs/chat`, { transport })
    .configureLogging(signalR.LogLevel.Warning);
  if (protocol === "msgpack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  const connection = builder.build();
  const client = { name, connection, texts: [], closed: null, done: null };
  client.all = new Promise((resolve) => (client.done = resolve));
  connection.on("broadcastMessage", (from, text) => {
    if (from !== "burst") return;
    client.texts.push(text);
    if (client.texts.length === COUNT) client.done();
  });
  for (const quiet of ["joined", "left"]) connection.on(quiet, () => {});
  connection.onclose((error) => (client.closed = error ?? new Error("closed")));
  return client;
}

function check(client) {
  assert.equal(client.closed, null, `${client.name} was closed: ${client.closed}`);
  assert.equal(client.texts.length, COUNT, `${client.name} got ${client.texts.length}`);
  client.texts.forEach((text, i) => {
    assert.equal(text.length, SIZE, `${client.name}: message ${i} has ${text.length} bytes`);
    assert.equal(text.slice(0, 6), String(i).padStart(6, "0"), `${client.name}: message ${i} out of order`);
  });
}

const sender = connect("sender");
const reader = connect("reader");
try {
  await sender.connection.start();
  await reader.connection.start();
  const started = Date.now();
  const sends = [];
  for (let i = 0; i < COUNT; i++) {
    const text = String(i).padStart(6, "0") + "x".repeat(SIZE - 6);
    sends.push(sender.connection.send("Send", "burst", text));
  }
  await Promise.all(sends);
  const timeout = new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`not delivered within ${DEADLINE_MS} ms`)), DEADLINE_MS),
  );
  await Promise.race([Promise.all([sender.all, reader.all]), timeout]);
  check(sender);
  check(reader);
  // Both are still connected and usable.
  assert.equal(await sender.connection.invoke("Echo", "after"), "after");
  assert.equal(await reader.connection.invoke("Echo", "after"), "after");
  console.log(`burst of ${COUNT} x ${SIZE} B over ${transportName}/${protocol} delivered in ${Date.now() - started} ms`);
  await sender.connection.stop();
  await reader.connection.stop();
  console.log("all steps passed");
  process.exit(0);
} catch (e) {
  console.error(`FAILED: ${e.stack ?? e}`);
  console.error(`sender got ${sender.texts.length}, reader ${reader.texts.length}; closed: ${sender.closed} / ${reader.closed}`);
  process.exit(1);
}
