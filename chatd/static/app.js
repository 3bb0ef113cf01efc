// The chatd page: one WebSocket in the chatd.json subprotocol (see docs/protocol.md).
// Everything users typed is put on the page with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "chatd.token";
const $ = (id) => document.getElementById(id);
const messages = $("messages");

let socket = null;
let me = null; // our current name
let lastId = null; // the newest public message shown: a reconnect resumes after it
const shown = new Set(); // keys of the messages on the page, so nothing is shown twice
let newest = 0; // the highest id on the page, public or private
let authPending = false; // sent /auth with the saved token; an error means it expired
let retryDelay = 500;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function nearBottom() {
  return messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
}

function append(node) {
  const stick = nearBottom();
  messages.append(node);
  if (stick) messages.scrollTop = messages.scrollHeight;
}

function line(kind, text) {
  append(el("li", kind, text));
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// Public ids are unique for good; a whisper's id may come again after a server restart.
const key = (m) => (m.private ? `p${m.id}@${m.time}` : m.id);

function showMessage(m) {
  if (shown.has(key(m))) return;

  const item = el("li", "msg");
  item.dataset.id = m.id;
  if (m.private) item.classList.add("private");
  if (m.from === me) item.classList.add("mine");
  const time = el("time", "", clock(m.time));
  time.dateTime = new Date(m.time * 1000).toISOString();
  time.title = new Date(m.time * 1000).toLocaleString();
  let who = m.from;
  if (m.private) who = m.from === me ? `to ${m.to}` : `${m.from} (private)`;
  item.append(time, el("span", "from", who), el("span", "text", m.text));

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
  if (stick) messages.scrollTop = messages.scrollHeight;
}

function setIdentity(event) {
  me = event.name;
  $("me").textContent = event.account ? `${event.name} ✓` : event.name;
  $("me").title = event.account ? "logged in" : "guest; log in or register to keep your name";
  if (event.token) localStorage.setItem(TOKEN_KEY, event.token);
  if (event.account) authPending = false;
  const loggedIn = Boolean(event.account);
  $("account-toggle").hidden = loggedIn;
  $("logout").hidden = !loggedIn;
  if (loggedIn) showAccountForm(false);
}

function setPresence(names) {
  const list = $("online");
  list.replaceChildren(...names.map((n) => el("li", n === me ? "self" : "", n)));
  $("online-count").textContent = `(${names.length})`;
}

const handlers = {
  message: showMessage,
  history: (event) => event.messages.forEach(showMessage),
  notice: (event) => line("notice", event.text),
  error(event) {
    if (authPending) {
      authPending = false;
      localStorage.removeItem(TOKEN_KEY);
    }
    line("error", event.text);
  },
  presence: (event) => setPresence(event.names),
  identity: setIdentity,
};

function send(request) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(request));
  return true;
}

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws`, "chatd.json");
  socket.onopen = () => {
    retryDelay = 500;
    setStatus("connected", "up");
    const token = localStorage.getItem(TOKEN_KEY);
    if (token) {
      authPending = true;
      send({ text: `/auth ${token}` });
    }
    // The recent messages on the first connect; after a reconnect, what was missed.
    send({ type: "resume", after: lastId ?? 0 });
  };
  socket.onmessage = (frame) => {
    const event = JSON.parse(frame.data);
    const handle = handlers[event.type];
    if (handle) handle(event);
  };
  socket.onclose = () => {
    socket = null;
    authPending = false;
    const wait = retryDelay + Math.random() * retryDelay * 0.3;
    retryDelay = Math.min(retryDelay * 2, 15000);
    setStatus(`offline, reconnecting in ${Math.ceil(wait / 1000)} s`, "down");
    setTimeout(connect, wait);
  };
}

function showAccountForm(show) {
  $("account").hidden = !show;
  $("account-toggle").setAttribute("aria-expanded", String(show));
  if (show) $("account-name").focus();
}

$("account-toggle").addEventListener("click", () => showAccountForm($("account").hidden));

$("account").addEventListener("submit", (e) => {
  e.preventDefault();
  const action = e.submitter && e.submitter.value === "register" ? "register" : "login";
  const name = $("account-name").value.trim();
  const password = $("account-password").value;
  if (!send({ text: `/${action} ${name} ${password}` })) {
    line("error", "not connected yet; try again in a moment");
    return;
  }
  $("account-password").value = "";
  $("input").focus();
});

$("logout").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  send({ text: "/logout" });
});

$("say").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("input");
  const text = input.value;
  if (!text.trim()) return;
  if (!send({ text })) {
    line("error", "not connected; your message is still in the box, send it again soon");
    return;
  }
  if (/^\/logout\b/.test(text)) localStorage.removeItem(TOKEN_KEY);
  input.value = "";
});

connect();
