// Stateful reconnect with the official JavaScript client: a client with
// withStatefulReconnect() talks to Herald through a proxy that the test cuts; every message
// published while it is cut off must arrive exactly once, in order, with no reconnecting
// event (stateful reconnect is invisible to the app).
//
// Usage: node reconnect.mjs PROXIED_URL DIRECT_URL COUNT
// Protocol with the test: prints "ready" once connected, waits for "go" on stdin, prints
// "mid" halfway through publishing, then "all steps passed" or "not ok - …".

import * as signalR from "@microsoft/signalr";
import readline from "node:readline";

const [proxied, direct, countText] = process.argv.slice(2);
const count = Number(countText || 200);
const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

function fail(why) {
  console.log(`not ok - ${why}`);
  process.exit(1);
}

const received = [];
let reconnecting = 0;
const a = new signalR.HubConnectionBuilder()
  .withUrl(`${proxied}/hubs/chat`, { transport: signalR.HttpTransportType.WebSockets })
  .withStatefulReconnect()
  .configureLogging(process.env.SIGNALR_LOG === "debug" ? signalR.LogLevel.Debug : signalR.LogLevel.Error)
  .build();
a.on("broadcastMessage", (name, text) => {
  if (name === "seq") received.push(Number(text));
});
a.onreconnecting(() => reconnecting++);
let stopping = false;
a.onclose((e) => stopping || fail(`the stateful client closed: ${e}`));

const b = new signalR.HubConnectionBuilder()
  .withUrl(`${direct}/hubs/chat`, { transport: signalR.HttpTransportType.WebSockets })
  .configureLogging(signalR.LogLevel.Error)
  .build();

await a.start();
await b.start();
console.log("ready");
await nextLine(); // the test cut the connection once (the client's first reconnect)
for (let i = 0; i < count; i++) {
  await b.send("Send", "seq", String(i));
  if (i === Math.floor(count / 2)) {
    console.log("mid");
    await nextLine(); // cut again, while messages flow
  }
  await new Promise((r) => setTimeout(r, 2));
}
const deadline = Date.now() + 15000;
while (received.length < count && Date.now() < deadline) {
  await new Promise((r) => setTimeout(r, 50));
}
const expected = Array.from({ length: count }, (_, i) => i);
if (JSON.stringify(received) !== JSON.stringify(expected)) {
  const dupes = received.length - new Set(received).size;
  const missing = expected.filter((i) => !received.includes(i));
  fail(`received ${received.length} of ${count}: ${dupes} duplicated, missing ${JSON.stringify(missing.slice(0, 20))}`);
}
if (reconnecting !== 0) fail(`onreconnecting fired ${reconnecting} times`);
if (a.state !== signalR.HubConnectionState.Connected) fail(`state is ${a.state}`);
stopping = true;
await a.stop();
await b.stop();
console.log("all steps passed");
process.exit(0);
