// The chatd page: one WebSocket in the chatd.json subprotocol (see docs/protocol.md).
// Everything users typed is put on the page as text nodes, never as HTML.
"use strict";

const TOKEN_KEY = "chatd.token";
// Reconnecting: the first retry soon, then doubling up to a low cap, each with jitter so a
// restarted server is not hit by every page at once, and none waits long once it is back.
const RETRY_FIRST_MS = 250;
const RETRY_CAP_MS = 1500;
const TITLE = document.title;
const $ = (id) => document.getElementById(id);
const messages = $("messages");

let socket = null;
let me = null; // our current name
let lastId = null; // the newest public message shown: a reconnect resumes after it
const shown = new Set(); // keys of the messages on the page, so nothing is shown twice
let newest = 0; // the highest id on the page, public or private
let helloToken = null; // the saved token this connection came with
let retryDelay = RETRY_FIRST_MS;
let retryTimer = null;
let countdown = null;
let retryAt = 0;
let attempts = 0; // connection attempts since the last success
let away = document.hidden || !document.hasFocus(); // unread messages count in the title
let unread = 0;
let unseen = 0; // messages that arrived while scrolled up
// Rooms: the one on screen, the ones we are in (name -> unread count), member lists, topics.
let room = null; // the room shown, where what we type goes; null until the server names one
let defaultRoom = null; // the first room the server named: everyone is in it
const joined = new Map();
const members = new Map();
const topics = new Map();

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- links: only http and https, built as nodes -------------------------------------------

const URL_IN_TEXT = /\bhttps?:\/\/[^\s<>"'`]+/gi;

function link(raw) {
  let url;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  const a = el("a", "", raw);
  a.href = url.href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  return a;
}

function withLinks(text) {
  const span = el("span", "text");
  let from = 0;
  for (const match of text.matchAll(URL_IN_TEXT)) {
    // Sentence punctuation after a link is not part of it; a ")" is when "(" is.
    let raw = match[0].replace(/[.,;:!?]+$/, "");
    while (raw.endsWith(")") && raw.split("(").length < raw.split(")").length) {
      raw = raw.slice(0, -1).replace(/[.,;:!?]+$/, "");
    }
    span.append(text.slice(from, match.index));
    span.append(link(raw) ?? raw);
    from = match.index + raw.length;
  }
  span.append(text.slice(from));
  return span;
}

// -- the message list ---------------------------------------------------------------------

function nearBottom() {
  return messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
}

function toBottom() {
  messages.scrollTop = messages.scrollHeight;
  unseen = 0;
  $("jump").hidden = true;
}

function append(node) {
  const stick = nearBottom();
  messages.append(node);
  if (stick) toBottom();
}

// A line of a room is shown only while that room is; one about no room (a command's
// answer) belongs to the room on screen when it came.
function inRoom(node, name) {
  node.dataset.room = name ?? room ?? "";
  node.hidden = room !== null && node.dataset.room !== room;
  return node;
}

function line(kind, text, name) {
  append(inRoom(el("li", kind, text), name));
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// Public ids are unique for good; a whisper's id may come again after a server restart.
const key = (m) => (m.private ? `p${m.id}@${m.time}` : m.id);

function showMessage(m, live) {
  if (shown.has(key(m))) return;

  const item = el("li", "msg");
  item.dataset.id = m.id;
  if (m.private) item.classList.add("private");
  const mine = m.mine ?? m.from === me; // "mine": by who sent it, whatever the names now
  if (mine) item.classList.add("mine");
  const time = el("time", "", clock(m.time));
  time.dateTime = new Date(m.time * 1000).toISOString();
  time.title = new Date(m.time * 1000).toLocaleString();
  let who = m.from;
  if (m.private) who = mine ? `to ${m.to}` : `${m.from} (private)`;
  item.append(el("span", "from", who), time, withLinks(m.text));
  inRoom(item, m.private ? null : m.room ?? defaultRoom);

  // Keep id order: a resumed message may arrive after newer live ones.
  const stick = nearBottom();
  const later = newest > m.id
    ? [...messages.querySelectorAll("li.msg")].find((n) => Number(n.dataset.id) > m.id)
    : null;
  if (later) messages.insertBefore(item, later);
  else messages.append(item);
  shown.add(key(m));
  newest = Math.max(newest, m.id);
  // Whispers are not in the history a resume reads, so only public ids count.
  if (!m.private) lastId = lastId === null ? m.id : Math.max(lastId, m.id);
  if (stick || (mine && live)) toBottom();
  else if (live) {
    unseen += 1;
    $("jump").textContent = `↓ ${unseen} new message${unseen === 1 ? "" : "s"}`;
    $("jump").hidden = false;
  }
  if (live && !mine && away) {
    unread += 1;
    document.title = `(${unread}) ${TITLE}`;
  }
  if (live && !mine && !m.private && m.room && m.room !== room && joined.has(m.room)) {
    joined.set(m.room, joined.get(m.room) + 1);
    drawRooms();
  }
}

// -- rooms --------------------------------------------------------------------------------

function drawRooms() {
  const list = $("rooms");
  list.replaceChildren(
    ...[...joined].map(([name, count]) => {
      const item = el("li", name === room ? "current" : "");
      const button = el("button", "", name);
      button.type = "button";
      button.dataset.room = name;
      if (count > 0) button.append(el("span", "unread", String(count)));
      button.addEventListener("click", () => showRoom(name));
      item.append(button);
      return item;
    }),
  );
  // Any room may be left while one is in another (the server refuses the last one).
  $("part").hidden = room === null || joined.size < 2;
  $("room-name").textContent = room ?? "";
  $("topic").textContent = room && topics.get(room) ? `Topic: ${topics.get(room)}` : "";
}

function showRoom(name) {
  room = name;
  if (!joined.has(name)) joined.set(name, 0);
  joined.set(name, 0);
  for (const node of messages.children) {
    node.hidden = node.dataset.room !== "" && node.dataset.room !== name;
  }
  setPresence(members.get(name) ?? []);
  drawRooms();
  toBottom();
}

function knowRoom(name) {
  if (name === null || name === undefined || joined.has(name)) return;
  joined.set(name, 0);
  if (defaultRoom === null) defaultRoom = name;
  if (room === null) showRoom(name);
  else drawRooms();
}

function setRooms(event) {
  for (const name of [...joined.keys()]) if (!event.rooms.includes(name)) joined.delete(name);
  for (const name of event.rooms) knowRoom(name);
  if (defaultRoom === null) defaultRoom = event.rooms[0];
  if (event.current !== room) showRoom(event.current);
  else drawRooms();
}

function roomNotice(event) {
  const topic = /^(?:topic: (.*)|.* set the topic: (.*))$/.exec(event.text);
  if (topic && event.room) topics.set(event.room, topic[1] ?? topic[2]);
  line("notice", event.text, event.room);
  if (topic) drawRooms();
}

$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("join-name").value.trim();
  if (!name) return;
  if (send({ text: `/join ${name}`, room })) $("join-name").value = "";
});

$("part").addEventListener("click", () => send({ text: "/part", room }));

messages.addEventListener("scroll", () => {
  if (nearBottom()) toBottom();
});
$("jump").addEventListener("click", toBottom);

function setAway(value) {
  away = value;
  if (!away) {
    unread = 0;
    document.title = TITLE;
  }
}
window.addEventListener("blur", () => setAway(true));
window.addEventListener("focus", () => setAway(false));
document.addEventListener("visibilitychange", () => setAway(document.hidden || !document.hasFocus()));

// -- who we are, who is here --------------------------------------------------------------

function setIdentity(event) {
  me = event.name;
  $("me").textContent = event.account ? `${event.name} ✓` : event.name;
  $("me").title = event.account ? "logged in" : "guest; log in or register to keep your name";
  if (event.token) localStorage.setItem(TOKEN_KEY, event.token);
  if (helloToken && !event.account) localStorage.removeItem(TOKEN_KEY); // it no longer works
  helloToken = null;
  const loggedIn = Boolean(event.account);
  $("account-toggle").hidden = loggedIn;
  $("logout").hidden = !loggedIn;
  if (loggedIn) showAccountForm(false);
}

function presence(event) {
  if (event.room && !event.update) {
    line("notice", `In ${event.room} (${event.names.length}): ${event.names.join(", ")}`);
    return;
  }
  if (event.room) {
    members.set(event.room, event.names);
    knowRoom(event.room);
    if (event.room !== room) return;
  }
  setPresence(event.names);
}

function setPresence(names) {
  const list = $("online");
  list.replaceChildren(...names.map((n) => el("li", n === me ? "self" : "", n)));
  $("online-count").textContent = `(${names.length})`;
}

// An answer to a login or register request: in the form when it asked, else in the stream.
function answered(event) {
  const inForm = !$("account").hidden;
  if (event.type === "error") {
    if (inForm) {
      $("account-error").textContent = event.text;
      $("account-error").hidden = false;
    } else line("error", event.text);
    return;
  }
  $("account-password").value = "";
  showAccountForm(false);
  line("notice", event.text);
  if (event.request === "register") showToken();
}

const handlers = {
  message: (event) => showMessage(event, true),
  history: (event) => event.messages.forEach((m) => showMessage(m, false)),
  notice: (event) => (event.request ? answered(event) : roomNotice(event)),
  error: (event) => (event.request ? answered(event) : line("error", event.text)),
  presence,
  rooms: setRooms,
  identity: setIdentity,
};

function send(request) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(request));
  return true;
}

// -- the connection -----------------------------------------------------------------------

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
  document.body.classList.toggle("offline", state !== "up");
  $("retry").hidden = state !== "down";
}

function showCountdown() {
  const left = Math.max(0, retryAt - Date.now()) / 1000;
  setStatus(`offline, retrying in ${left.toFixed(1)} s`, "down");
}

function connect() {
  clearTimeout(retryTimer);
  clearInterval(countdown);
  if (socket) return; // already connecting
  attempts += 1;
  $("status").dataset.attempts = attempts;
  setStatus("connecting…", "connecting");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // ?hello=1: the door waits for our first frame, so a saved login joins already logged in.
  const ws = new WebSocket(`${scheme}://${location.host}/ws?hello=1`, "chatd.json");
  socket = ws;
  ws.onopen = () => {
    retryDelay = RETRY_FIRST_MS;
    attempts = 0;
    setStatus("connected", "up");
    helloToken = localStorage.getItem(TOKEN_KEY);
    send({ type: "hello", token: helloToken });
    // The recent messages on the first connect; after a reconnect, what was missed.
    send({ type: "resume", after: lastId ?? 0 });
  };
  ws.onmessage = (frame) => {
    const event = JSON.parse(frame.data);
    const handle = handlers[event.type];
    if (handle) handle(event);
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    socket = null;
    const wait = retryDelay * (0.5 + Math.random() * 0.5);
    retryDelay = Math.min(retryDelay * 2, RETRY_CAP_MS);
    $("status").dataset.retryMs = Math.round(wait);
    retryAt = Date.now() + wait;
    retryTimer = setTimeout(connect, wait);
    countdown = setInterval(showCountdown, 100);
    showCountdown();
  };
}

$("retry").addEventListener("click", connect);

// -- accounts -----------------------------------------------------------------------------

function showAccountForm(show) {
  $("account").hidden = !show;
  $("account-error").hidden = true;
  $("account-toggle").setAttribute("aria-expanded", String(show));
  if (show) $("account-name").focus();
}

// Name and password travel as fields, never as a command line: a space stays in the name,
// where the server's name rules refuse it.
function account(action, name, password) {
  return send({ type: action, name, password });
}

$("account-toggle").addEventListener("click", () => showAccountForm($("account").hidden));

$("account").addEventListener("submit", (e) => {
  e.preventDefault();
  const action = e.submitter && e.submitter.value === "register" ? "register" : "login";
  $("account-error").hidden = true;
  if (!account(action, $("account-name").value.trim(), $("account-password").value)) {
    $("account-error").textContent = "not connected yet; try again in a moment";
    $("account-error").hidden = false;
  }
});

$("logout").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  send({ text: "/logout" });
});

function showToken() {
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) return;
  $("token").value = token;
  $("copied").textContent = "";
  $("token-dialog").showModal();
}

$("copy-token").addEventListener("click", async () => {
  const field = $("token");
  try {
    await navigator.clipboard.writeText(field.value);
    $("copied").textContent = "Copied.";
  } catch {
    field.select(); // no clipboard access (a page not served over https): copy by hand
    $("copied").textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
  }
});
$("close-token").addEventListener("click", () => $("token-dialog").close());

// -- typing -------------------------------------------------------------------------------

$("say").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("input");
  const text = input.value;
  if (!text.trim()) return;
  // Typed /login and /register go as requests too: their token lands in the dialog.
  const typed = /^\/(login|register) +(\S+) +(.+)$/.exec(text.trim());
  const sent = typed
    ? account(typed[1], typed[2], typed[3])
    : send(room === null ? { text } : { text, room });
  if (!sent) {
    line("error", "not connected; your message is still in the box, send it again soon");
    return;
  }
  if (/^\/logout\b/.test(text)) localStorage.removeItem(TOKEN_KEY);
  input.value = "";
});

connect();
