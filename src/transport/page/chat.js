// Herald's chat page: the official SignalR browser client (loaded before this file, as the
// global `signalR`) on the `chat` hub of config/herald.toml.
//
// The hub's methods: Send(args…) reaches everyone as broadcastMessage(args…);
// JoinGroup(group); SendToGroup(group, args…) reaches the group as groupMessage(group, args…);
// GetCount(). Its presence is "events": joined(connectionId, userId, count) when anyone
// connects, left(…) when anyone leaves. A tab that arrives hears of those who come after it,
// not of those already here, so the pages also meet in a group: a newcomer says hello there
// (once it is in the group itself) and everyone answers with their name.
"use strict";

(() => {
  const HUB_URL = "hubs/chat";
  const GROUP = "herald-page";
  const TRANSPORTS = {
    WebSockets: "WebSockets",
    ServerSentEvents: "Server-Sent Events",
    LongPolling: "Long polling",
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    transport: $("transport"),
    name: $("name"),
    messages: $("messages"),
    compose: $("compose"),
    text: $("text"),
    send: $("send"),
    count: $("count"),
    people: $("people"),
  };

  /** Connection id → { name, user } of everyone this tab knows to be here. */
  const people = new Map();
  let connection = null;
  let me = null;
  let hubCount = 0;
  let myName = sessionStorage.getItem("herald-name") || `guest-${Math.floor(1000 + Math.random() * 9000)}`;

  function setStatus(state, text) {
    ui.status.dataset.state = state;
    ui.status.textContent = text;
    const ready = state === "connected";
    ui.text.disabled = !ready;
    ui.send.disabled = !ready;
  }

  function atBottom() {
    const list = ui.messages;
    return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  }

  function append(li) {
    const follow = atBottom();
    ui.messages.append(li);
    if (follow) ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function notice(text) {
    const li = document.createElement("li");
    li.className = "notice";
    li.textContent = text;
    append(li);
  }

  function message(from, text, mine) {
    const li = document.createElement("li");
    if (mine) li.className = "mine";
    const who = document.createElement("div");
    who.className = "from";
    who.textContent = `${from} · ${new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
    const body = document.createElement("div");
    body.className = "body";
    body.textContent = text;
    li.append(who, body);
    append(li);
  }

  function displayName(id) {
    const person = people.get(id);
    return person?.name || person?.user || `guest ${id.slice(0, 4)}`;
  }

  function see(id, { user, name } = {}) {
    const person = people.get(id) ?? {};
    if (user) person.user = user;
    if (name) person.name = String(name).slice(0, 40);
    people.set(id, person);
  }

  function render() {
    const items = [...people.keys()]
      .sort((a, b) => (a === me ? -1 : b === me ? 1 : displayName(a).localeCompare(displayName(b))))
      .map((id) => {
        const li = document.createElement("li");
        li.dataset.id = id;
        if (id === me) li.className = "me";
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = displayName(id);
        const short = document.createElement("span");
        short.className = "id";
        short.textContent = id.slice(0, 6);
        short.title = id;
        li.append(name, short);
        return li;
      });
    ui.people.replaceChildren(...items);
    ui.count.textContent = String(Math.max(hubCount, people.size));
  }

  /** Tells the other pages who this tab is; `hello` asks them to answer in kind. */
  function announce(hello) {
    return connection.invoke("SendToGroup", GROUP, { id: me, name: myName, hello });
  }

  /** After a (re)connect: this tab's new id, the count, then the hello in the group. */
  async function arrive(c) {
    me = c.connectionId;
    see(me, { name: myName });
    render();
    hubCount = await c.invoke("GetCount");
    await c.invoke("JoinGroup", GROUP);
    await announce(true);
    render();
    setStatus("connected", `Connected · ${TRANSPORTS[ui.transport.value]}`);
  }

  async function connect() {
    const old = connection;
    connection = null;
    if (old) await old.stop();
    people.clear();
    me = null;
    hubCount = 0;
    render();
    const transport = ui.transport.value;
    const c = new signalR.HubConnectionBuilder()
      .withUrl(HUB_URL, { transport: signalR.HttpTransportType[transport] })
      .withAutomaticReconnect()
      .configureLogging(signalR.LogLevel.Warning)
      .build();
    connection = c;
    const current = (handler) => (...args) => {
      if (c === connection) handler(...args);
    };
    c.on("joined", current((id, user, count) => {
      see(id, { user });
      hubCount = count;
      render();
    }));
    c.on("left", current((id, _user, count) => {
      if (people.has(id) && id !== me) notice(`${displayName(id)} left`);
      people.delete(id);
      hubCount = count;
      render();
    }));
    c.on("broadcastMessage", current((from, text, id) => {
      message(String(from), String(text), id !== undefined && id === me);
    }));
    c.on("groupMessage", current((group, info) => {
      if (group !== GROUP || typeof info?.id !== "string" || info.id === me) return;
      const known = people.get(info.id)?.name;
      see(info.id, { name: info.name });
      render();
      if (info.hello) {
        notice(`${displayName(info.id)} joined`);
        announce(false).catch(() => {});
      } else if (known && known !== people.get(info.id).name) {
        notice(`${known} is now ${displayName(info.id)}`);
      }
    }));
    c.onreconnecting(current(() => {
      setStatus("reconnecting", "Reconnecting…");
      people.clear();
      render();
    }));
    c.onreconnected(current(() => arrive(c).catch((e) => notice(`Could not rejoin: ${e.message}`))));
    c.onclose(current((e) => setStatus("disconnected", e ? `Disconnected: ${e.message}` : "Disconnected")));

    setStatus("connecting", `Connecting over ${TRANSPORTS[transport]}…`);
    try {
      await c.start();
      if (c === connection) await arrive(c);
    } catch (e) {
      if (c === connection) setStatus("disconnected", `Could not connect: ${e.message}`);
    }
  }

  ui.compose.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.text.value.trim();
    if (!text || !connection) return;
    connection
      .invoke("Send", myName, text, me)
      .then(() => {
        ui.text.value = "";
      })
      .catch((e) => notice(`Not sent: ${e.message}`));
  });

  ui.name.addEventListener("change", () => {
    myName = ui.name.value.trim().slice(0, 40) || myName;
    ui.name.value = myName;
    sessionStorage.setItem("herald-name", myName);
    if (me) {
      see(me, { name: myName });
      render();
    }
    if (connection?.state === signalR.HubConnectionState.Connected) announce(false).catch(() => {});
  });

  ui.transport.addEventListener("change", () => {
    sessionStorage.setItem("herald-transport", ui.transport.value);
    const url = new URL(location.href);
    url.searchParams.set("transport", ui.transport.value);
    history.replaceState(null, "", url);
    connect();
  });

  // ?transport=LongPolling (or the tab's last choice) picks the transport to start with.
  const wanted = new URLSearchParams(location.search).get("transport") ?? sessionStorage.getItem("herald-transport");
  if (wanted in TRANSPORTS) ui.transport.value = wanted;
  ui.name.value = myName;
  connect();
})();
