// A broadcast server on Socket.IO: every `msg` event a client emits is re-emitted to every
// client, the sender included. WebSocket transport only, as the load generator speaks it.
// Usage: node socketio-server.js PORT
"use strict";
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 8082);
const io = new Server(port, {
  transports: ["websocket"],
  perMessageDeflate: false,
  // The load generator does not answer Engine.IO pings; keep them out of a run's way.
  pingInterval: 600000,
  pingTimeout: 600000,
});
io.on("connection", (socket) => {
  socket.on("msg", (text) => io.emit("msg", text));
});
console.log(`socket.io listening on ${port}`);
