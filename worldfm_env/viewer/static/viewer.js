// The worldfm-env viewer page: keys and controls go to the server over one websocket; frames come back.
"use strict";

const $ = (id) => document.getElementById(id);
let socket = null;
let boundKeys = new Set();
let recording = false;
let autopilot = false;
let formEdited = false;  // the controls keep what the user typed until it is applied

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function showError(text) {
  $("error").textContent = text ? "error: " + text : "";
}

function fixed(value, digits) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
}

function setImage(id, data) {
  const img = $("img-" + id);
  if (data) img.src = "data:image/png;base64," + data;
  else img.removeAttribute("src");
}

// Browser key names -> the server's binding names (see worldfm_env/viewer/protocol.py).
function keyName(event) {
  if (event.key === " " || event.code === "Space") return "space";
  return event.key.toLowerCase();
}

function onHello(m) {
  boundKeys = new Set(m.bound_keys);
  const renderer = $("ctl-renderer");
  renderer.innerHTML = "";
  for (const name of m.renderers) renderer.add(new Option(name, name));
  const memoryRow = $("ctl-memory-row");
  const memory = $("ctl-memory");
  memory.innerHTML = "";
  if (m.memory_modes) {
    for (const name of m.memory_modes) memory.add(new Option(name, name));
    memoryRow.hidden = false;
  } else {
    memoryRow.hidden = true;
  }
  const keys = $("keys");
  keys.innerHTML = "";
  for (const [combo, what] of m.keys) {
    const row = keys.insertRow();
    row.insertCell().innerHTML = combo.split(" / ").map((k) => "<kbd>" + k + "</kbd>").join(" / ");
    row.insertCell().textContent = what;
  }
  $("autopilot-row").hidden = !m.policy;
  $("policy-name").textContent = m.policy ? "policy " + m.policy : "";
  fillSettings(m.settings);
  $("status").textContent = "connected";
}

function fillSettings(s) {
  $("ctl-scenes").value = s.scenes;
  $("ctl-seed").value = s.seed;
  $("ctl-renderer").value = s.renderer;
  if (s.memory !== null && s.memory !== undefined) $("ctl-memory").value = s.memory;
}

function onFrame(m) {
  setImage("observation", m.images.observation);
  for (const panel of ["anchor", "generated", "ground_truth"]) {
    setImage(panel, m.images[panel]);
    const na = $("na-" + panel);
    const reason = m.unavailable[panel];
    na.textContent = reason ? "not available: " + reason : "";
    na.classList.toggle("shown", !m.images[panel]);
  }
  setImage("map", m.images.map);
  $("renderer").textContent = m.renderer;
  $("episode").textContent = m.episode;
  $("step").textContent = m.step;
  $("reward").textContent = fixed(m.reward, 3);
  $("return").textContent = fixed(m.return, 3);
  $("goal-distance").textContent = m.pointgoal ? fixed(m.pointgoal.distance, 3) : "-";
  $("goal-angle").textContent = m.pointgoal ? fixed(m.pointgoal.angle_deg, 1) : "-";
  $("memory-points").textContent = m.memory_points === null ? "-" : m.memory_points;
  $("done").textContent = m.done ? "episode over: the next key starts a new one" : "running";
  $("pose-x").textContent = fixed(m.pose.x, 3);
  $("pose-y").textContent = fixed(m.pose.y, 3);
  $("pose-z").textContent = fixed(m.pose.z, 3);
  $("pose-yaw").textContent = fixed(m.pose.yaw_deg, 2);
  $("pose-pitch").textContent = fixed(m.pose.pitch_deg, 2);
  const metrics = $("metrics");
  metrics.innerHTML = "";
  for (const [name, value] of Object.entries(m.metrics)) {
    const row = metrics.insertRow();
    row.insertCell().textContent = name;
    row.insertCell().textContent =
      typeof value === "number" && !Number.isInteger(value) ? value.toFixed(3) : String(value);
    row.cells[1].id = "metric-" + name;
  }
  recording = m.recording.on;
  $("btn-record").textContent = recording ? "stop recording" : "start recording";
  $("btn-record").classList.toggle("on", recording);
  $("record-status").textContent = recording ? m.recording.frames + " frames" : "";
  if (m.recording.last) {
    $("record-link").href = m.recording.last;
    $("record-link").hidden = false;
  }
  autopilot = m.autopilot;
  $("btn-autopilot").textContent = "autopilot: " + (autopilot ? "on" : "off");
  $("btn-autopilot").classList.toggle("on", autopilot);
  if (!formEdited) fillSettings(m.settings);
  $("status").textContent = "connected";
  $("frame-seq").textContent = m.seq;
  document.body.dataset.seq = m.seq;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(scheme + "://" + location.host + "/ws");
  socket.onmessage = (event) => {
    const m = JSON.parse(event.data);
    if (m.type === "hello") onHello(m);
    else if (m.type === "frame") { onFrame(m); showError(""); }
    else if (m.type === "error") showError(m.message);
    else if (m.type === "recorded") $("record-status").textContent = "wrote " + m.name;
  };
  socket.onclose = () => { $("status").textContent = "disconnected: reload the page once the server runs"; };
  socket.onerror = () => { $("status").textContent = "connection error"; };
}

document.addEventListener("keydown", (event) => {
  if (event.target.matches("input, select, textarea")) return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const name = keyName(event);
  if (!boundKeys.has(name)) return;
  event.preventDefault();  // no page scroll on arrows/space, no back navigation on backspace
  send({ type: "key", key: name });
});

$("controls").addEventListener("input", () => { formEdited = true; });

$("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  formEdited = false;
  const message = {
    type: "configure",
    scenes: $("ctl-scenes").value,
    seed: parseInt($("ctl-seed").value, 10),
    renderer: $("ctl-renderer").value,
  };
  if (!$("ctl-memory-row").hidden) message.memory = $("ctl-memory").value;
  $("status").textContent = "building the env ...";
  send(message);
  document.activeElement.blur();
});

$("btn-record").addEventListener("click", (event) => {
  send({ type: "record", on: !recording });
  event.currentTarget.blur();
});

$("btn-autopilot").addEventListener("click", (event) => {
  send({ type: "autopilot", on: !autopilot });
  event.currentTarget.blur();
});

connect();
