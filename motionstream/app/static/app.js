// MotionStream studio page: one WebSocket (docs/PROTOCOL.md), a video canvas and an overlay canvas.
// Tracks are drawn on the overlay locally, so the cursor never waits for the model; controls go up
// as JSON stamped with seq / frame / chunk, frames come down as FRAME_HEADER_BYTES + JPEG.
"use strict";

const FRAME_HEADER_BYTES = 32;          // = motionstream.app.protocol.FRAME_HEADER.size
const FRAME_MAGIC = "MSF1";
const NO_SEQ = 0xffffffff;
const FLAG_CHUNK_START = 2;             // = protocol.FLAG_CHUNK_START: the frame carries its chunk's gen_ms
const GEN_MS_OFFSET = 28;               // byte offset of the float32 gen_ms in the frame header
const RECONNECT_MS = 2000;
const PATH_SAMPLE_MS = 15;              // keep at most one path keyframe per this many ms
const HUD_WINDOW_MS = 2000;            // the HUD's fps and latency: paints / samples of the last 2 s
const HUD_MIN_SPAN_MS = 250;           // fps is shown once the stream has painted for this long
const MEASURE_LOG_MAX = 100000;        // paint times and latencies kept per stream (benchmarks read them)
const POINTER_TYPES = new Set(["pointer_down", "pointer_move", "pointer_up"]);
const LOG_LINES = 40;
const COLORS = { drag: "#3ddc84", pin: "#ff5a5a", path: "#4aa3ff" };

const $ = (id) => document.getElementById(id);
const TOKEN = new URLSearchParams(location.search).get("token") || "";
const api = (path) => TOKEN ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}` : path;

// Everything the page knows; exposed for scripted clients and the browser tests.
const S = window.studio = {
  ws: null, session: null, sessionKey: null, model: null, width: 256, height: 144, fps: 16,
  status: "offline",            // offline | idle | queued | starting | streaming | paused
  position: 0, imageId: null, videoId: null, recording: false, recordingUrl: null,
  framesReceived: 0, streamFrames: 0, lastFrame: -1, lastChunk: -1, quality: null, rttMs: null,
  // honest HUD: a paint = the first animation frame after a new video frame was drawn (rAF time);
  // latency = a pointer event's time -> the paint of the first frame whose ack_seq covers it
  paintTimes: [], paintLog: [], latencySamples: [], latencyLog: [], latencyMs: null, pointerAt: new Map(),
  drawn: null, streamPaintStart: null, chunkGenLog: [],
  seq: 0, errors: [],
  pins: [], paths: [], drag: null, draft: null, hover: null, nextDragId: 1,
};

// ------------------------------------------------------------------------------ socket
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(api(`${scheme}://${location.host}/ws`));
  ws.binaryType = "arraybuffer";
  S.ws = ws;
  ws.onopen = () => { setConn(true); };
  ws.onclose = () => {
    setConn(false); setStatus("offline"); S.session = null; S.recording = false; updateRecord(); clearHud();
    setTimeout(connect, RECONNECT_MS);
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") onMessage(JSON.parse(ev.data));
    else onFrame(ev.data);
  };
}

function send(msg, stamped = true, eventTime = null) {
  if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
  if (stamped) {
    msg.seq = ++S.seq;
    msg.frame = Math.max(S.lastFrame, 0);
    msg.chunk = Math.max(S.lastChunk, 0);
    if (POINTER_TYPES.has(msg.type)) S.pointerAt.set(msg.seq, eventTime ?? performance.now());
  }
  S.ws.send(JSON.stringify(msg));
  return true;
}

// a pointer control, stamped with its event's time (ev.timeStamp: the performance.now() clock)
const sendPointer = (msg, ev) => send(msg, true, ev.timeStamp);

function onMessage(m) {
  switch (m.type) {
    case "hello":
      S.session = m.session; S.sessionKey = m.session_key; S.width = m.width; S.height = m.height; S.fps = m.fps; S.model = m.model;
      $("model").textContent = `model: ${m.model.name || m.model.kind}`;
      $("model").title = `${m.model.label} · decoder ${m.model.decoder} · ${m.width}x${m.height} @ ${m.fps} fps`;
      $("spacing").value = m.grid_spacing; $("spacing-out").textContent = m.grid_spacing;
      $("size").value = m.grid_size; $("size-out").textContent = m.grid_size;
      $("camera-path").innerHTML = m.camera_paths.map((p) => `<option>${p}</option>`).join("");
      sizeCanvases();
      setStatus("idle");
      if (!S.imageId) pickSample($("sample").value || "astronaut"); else showImage();
      break;
    case "queued": S.position = m.position; setStatus("queued"); log(`queued: position ${m.position}`); break;
    case "state": setQuality(m.quality); setStatus(m.status, m.warming_up); break;
    case "started":
      setQuality(m.quality); setStatus("streaming"); log(`streaming (${m.mode})`);
      for (const p of S.pins) if (!p.sent) sendPin(p);
      for (const p of S.paths) if (!p.sent) sendPath(p);
      break;
    case "stopped":
      setStatus("idle"); S.recording = false; updateRecord(); clearHud();
      for (const p of S.pins) p.sent = false;           // drawn controls stay and go with the next start
      for (const p of S.paths) { p.sent = false; p.playStart = null; }
      if (m.recording) setDownload(m.recording);
      S.stoppedFrames = m.frames;                        // = the frames this page received (S.streamFrames)
      log(`stopped after ${m.frames} frames`);
      break;
    case "recording":
      S.recording = m.on; updateRecord();
      if (m.url) setDownload(m.url);
      break;
    case "error": S.errors.push(m); log(`error: ${m.message}`, true); break;
    case "pong": S.rttMs = performance.now() - m.client_time; break;
  }
}

async function onFrame(buf) {
  if (buf.byteLength < FRAME_HEADER_BYTES) return;
  const dv = new DataView(buf);
  const magic = String.fromCharCode(dv.getUint8(0), dv.getUint8(1), dv.getUint8(2), dv.getUint8(3));
  if (magic !== FRAME_MAGIC) return;
  const frame = dv.getUint32(4, true), chunk = dv.getUint32(8, true), ack = dv.getUint32(12, true);
  S.framesReceived += 1;
  S.streamFrames += 1;
  if (dv.getUint32(16, true) & FLAG_CHUNK_START && S.chunkGenLog.length < MEASURE_LOG_MAX) {
    S.chunkGenLog.push(dv.getFloat32(GEN_MS_OFFSET, true));
  }
  if (frame < S.lastFrame) return;
  S.lastFrame = frame; S.lastChunk = chunk;
  const bitmap = await createImageBitmap(new Blob([buf.slice(FRAME_HEADER_BYTES)], { type: "image/jpeg" }));
  if (frame === S.lastFrame) {
    $("video").getContext("2d").drawImage(bitmap, 0, 0, S.width, S.height);
    S.drawn = { frame, ack: ack === NO_SEQ ? null : ack };     // painted at the next animation frame
  }
  bitmap.close();
}

// The newest drawn frame reached the screen at animation frame time `t`: one paint, and the
// latency of every pointer event it is the first painted frame to include.
function notePaint(t) {
  const { ack } = S.drawn;
  S.drawn = null;
  if (S.streamPaintStart === null) S.streamPaintStart = t;
  S.paintTimes.push(t);
  if (S.paintLog.length < MEASURE_LOG_MAX) S.paintLog.push(t);
  if (ack === null) return;
  for (const [seq, at] of S.pointerAt) {
    if (seq > ack) continue;
    const ms = t - at;
    S.latencySamples.push([t, ms]);
    if (S.latencyLog.length < MEASURE_LOG_MAX) S.latencyLog.push(ms);
    S.latencyMs = ms;
    S.pointerAt.delete(seq);
  }
}

// ------------------------------------------------------------------------------ stream controls
function toggleStream() {
  if (S.status === "idle") startStream();
  else if (S.status !== "offline") send({ type: "stop" });
}

function startStream() {
  if (!S.imageId) { log("pick or upload an image first", true); return; }
  const mode = document.querySelector("input[name=mode]:checked").value;
  const msg = { type: "start", image: S.imageId, prompt: $("prompt").value, mode };
  if (mode === "transfer") {
    if (!S.videoId) { log("motion transfer: upload a driving video first", true); return; }
    msg.video = S.videoId;
  }
  if (mode === "camera") {
    msg.camera_path = $("camera-path").value;
    msg.camera_strength = parseFloat($("camera-strength").value);
  }
  S.lastFrame = -1; S.lastChunk = -1; S.streamFrames = 0;
  clearHud();
  send(msg);
  if (S.recordWanted) send({ type: "record", on: true });
}

function togglePause() {
  if (S.status === "streaming") send({ type: "pause" });
  else if (S.status === "paused") send({ type: "resume" });
}

function toggleRecord() {
  if (S.status === "idle" || S.status === "offline") {
    S.recordWanted = !S.recordWanted;            // armed: recording starts with the stream
    log(S.recordWanted ? "recording will start with the stream" : "recording disarmed");
    updateRecord();
    return;
  }
  send({ type: "record", on: !S.recording });
}

function setDownload(url) {
  S.recordingUrl = url;
  const a = $("download");
  a.href = api(url);
  a.classList.remove("disabled");
}

function updateRecord() {
  const b = $("record");
  b.classList.toggle("active", S.recording || !!S.recordWanted);
  b.textContent = S.recording ? "Stop recording" : (S.recordWanted ? "Record (armed)" : "Record");
  $("hud-rec").hidden = !S.recording;
  // the session key proves the download is ours: the server serves a recording to its own session only
  if (S.recording && S.session) setDownload(`/api/sessions/${S.session}/recording.mp4?key=${encodeURIComponent(S.sessionKey)}`);
}

// ------------------------------------------------------------------------------ image / video
async function loadSamples() {
  const r = await fetch(api("/api/samples"));
  const { samples } = await r.json();
  $("sample").innerHTML = samples.map((s) => `<option value="${s}">${s}</option>`).join("");
}

async function pickSample(name) {
  const r = await fetch(api(`/api/samples/${encodeURIComponent(name)}`), { method: "POST" });
  await useImageReply(r);
}

async function uploadImage(file) {
  const r = await fetch(api("/api/images"), { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
  await useImageReply(r);
}

async function useImageReply(r) {
  const body = await r.json();
  if (!r.ok) { log(`image: ${body.error || body.detail}`, true); return; }
  S.imageId = body.image;
  S.imageUrl = body.url;
  log(`image ready (${body.width}x${body.height})`);
  showImage();
}

function showImage() {
  if (!S.imageUrl || S.status === "streaming" || S.status === "paused") return;
  const img = new Image();
  img.onload = () => $("video").getContext("2d").drawImage(img, 0, 0, S.width, S.height);
  img.src = api(S.imageUrl);
}

async function uploadVideo(file) {
  $("video-info").textContent = "uploading…";
  const r = await fetch(api("/api/videos"), { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
  const body = await r.json();
  if (!r.ok) { $("video-info").textContent = "no video"; log(`video: ${body.error || body.detail}`, true); return; }
  S.videoId = body.video;
  $("video-info").textContent = `${body.frames} frames`;
}

// ------------------------------------------------------------------------------ pointer tools
const tool = () => document.querySelector("input[name=tool]:checked").value;
const spacing = () => parseFloat($("spacing").value);
const gridSize = () => parseFloat($("size").value);
const live = () => S.status === "streaming" || S.status === "starting" || S.status === "queued" || S.status === "paused";

function toImage(ev) {
  const r = $("overlay").getBoundingClientRect();
  return { x: (ev.clientX - r.left) * S.width / r.width, y: (ev.clientY - r.top) * S.height / r.height };
}

function onPointerDown(ev) {
  ev.preventDefault();
  $("overlay").setPointerCapture(ev.pointerId);
  const p = toImage(ev), t = tool();
  if (t === "drag") {
    S.drag = { id: S.nextDragId++, from: p, at: p, size: gridSize(), spacing: spacing(), sent: false };
    if (S.status === "streaming" || S.status === "paused" || S.status === "starting") {
      S.drag.sent = sendPointer({ type: "pointer_down", id: S.drag.id, x: p.x, y: p.y, size: S.drag.size, spacing: S.drag.spacing }, ev);
    } else log("press Enter to start streaming, then drag");
  } else if (t === "pin") {
    S.draft = { kind: "pin", x0: p.x, y0: p.y, x1: p.x, y1: p.y, spacing: spacing() };
  } else {
    S.draft = { kind: "path", t0: performance.now(), points: [[0, p.x, p.y]], size: gridSize(), spacing: spacing() };
  }
}

function onPointerMove(ev) {
  const p = toImage(ev);
  S.hover = p;
  if (S.drag) {
    S.drag.at = p;
    if (S.drag.sent) sendPointer({ type: "pointer_move", id: S.drag.id, x: p.x, y: p.y }, ev);
  } else if (S.draft && S.draft.kind === "pin") {
    S.draft.x1 = p.x; S.draft.y1 = p.y;
  } else if (S.draft && S.draft.kind === "path") {
    const ms = performance.now() - S.draft.t0, pts = S.draft.points;
    if (ms - pts[pts.length - 1][0] >= PATH_SAMPLE_MS) pts.push([ms, p.x, p.y]);
  }
}

function onPointerUp(ev) {
  if (S.drag) {
    if (S.drag.sent) sendPointer({ type: "pointer_up", id: S.drag.id }, ev);
    S.drag = null;
  } else if (S.draft && S.draft.kind === "pin") {
    let d = S.draft;
    if (Math.abs(d.x1 - d.x0) < d.spacing && Math.abs(d.y1 - d.y0) < d.spacing) {
      const h = gridSize() / 2;           // a click pins a square of the grid size
      d = { ...d, x0: d.x0 - h, y0: d.y0 - h, x1: d.x0 + h, y1: d.y0 + h };
    }
    S.pins.push(d);
    if (live()) sendPin(d);
  } else if (S.draft && S.draft.kind === "path") {
    const d = S.draft;
    S.paths.push(d);
    if (live()) sendPath(d);
  }
  S.draft = null;
}

function sendPin(p) {
  p.sent = send({ type: "pin", x0: p.x0, y0: p.y0, x1: p.x1, y1: p.y1, spacing: p.spacing });
}

function sendPath(p) {
  p.sent = send({ type: "path", points: p.points, size: p.size, spacing: p.spacing });
  p.playStart = performance.now();
}

function clearControls() {
  S.pins = []; S.paths = [];
  if (live()) send({ type: "clear_pins" });
}

// ------------------------------------------------------------------------------ overlay drawing
function sizeCanvases() {
  const v = $("video");
  // assigning a canvas size clears it: only when the stream size really changes
  if (v.width !== S.width || v.height !== S.height) { v.width = S.width; v.height = S.height; }
  const o = $("overlay"), r = v.getBoundingClientRect();
  o.width = Math.max(1, Math.round(r.width * devicePixelRatio));
  o.height = Math.max(1, Math.round(r.height * devicePixelRatio));
}

function gridDots(ctx, k, cx, cy, size, step, color) {
  const r = size / 2;
  ctx.fillStyle = color;
  for (let dy = -Math.floor(r / step) * step; dy <= r; dy += step) {
    for (let dx = -Math.floor(r / step) * step; dx <= r; dx += step) {
      if (dx * dx + dy * dy <= r * r) ctx.fillRect((cx + dx) * k - 1.5, (cy + dy) * k - 1.5, 3, 3);
    }
  }
}

function rectDots(ctx, k, p, color) {
  const [x0, x1] = [Math.min(p.x0, p.x1), Math.max(p.x0, p.x1)], [y0, y1] = [Math.min(p.y0, p.y1), Math.max(p.y0, p.y1)];
  ctx.strokeStyle = color; ctx.strokeRect(x0 * k, y0 * k, (x1 - x0) * k, (y1 - y0) * k);
  ctx.fillStyle = color;
  for (let y = y0; y <= y1 + 1e-6; y += p.spacing) for (let x = x0; x <= x1 + 1e-6; x += p.spacing) ctx.fillRect(x * k - 1.5, y * k - 1.5, 3, 3);
}

function pathAt(points, ms) {
  if (ms <= points[0][0]) return points[0];
  for (let i = 1; i < points.length; i++) {
    if (points[i][0] >= ms) {
      const [t0, x0, y0] = points[i - 1], [t1, x1, y1] = points[i];
      const a = t1 > t0 ? (ms - t0) / (t1 - t0) : 1;
      return [ms, x0 + a * (x1 - x0), y0 + a * (y1 - y0)];
    }
  }
  return null;                       // played out
}

function draw(t) {
  if (S.drawn) notePaint(t);
  const o = $("overlay"), ctx = o.getContext("2d");
  const k = o.width / S.width;
  ctx.clearRect(0, 0, o.width, o.height);
  ctx.lineWidth = 2;
  for (const p of S.pins) rectDots(ctx, k, p, COLORS.pin);
  if (S.draft && S.draft.kind === "pin") rectDots(ctx, k, S.draft, COLORS.pin);
  for (const p of [...S.paths, ...(S.draft && S.draft.kind === "path" ? [S.draft] : [])]) {
    ctx.strokeStyle = COLORS.path; ctx.beginPath();
    p.points.forEach(([, x, y], i) => (i ? ctx.lineTo(x * k, y * k) : ctx.moveTo(x * k, y * k)));
    ctx.stroke();
    const at = p.playStart && S.status === "streaming" ? pathAt(p.points, performance.now() - p.playStart) : p.points[0];
    if (at) gridDots(ctx, k, at[1], at[2], p.size, p.spacing, COLORS.path);
  }
  if (S.drag) {
    ctx.strokeStyle = COLORS.drag; ctx.beginPath();
    ctx.moveTo(S.drag.from.x * k, S.drag.from.y * k); ctx.lineTo(S.drag.at.x * k, S.drag.at.y * k); ctx.stroke();
    gridDots(ctx, k, S.drag.at.x, S.drag.at.y, S.drag.size, S.drag.spacing, COLORS.drag);
  } else if (S.hover && !S.draft && tool() === "drag") {
    ctx.globalAlpha = 0.35;
    gridDots(ctx, k, S.hover.x, S.hover.y, gridSize(), spacing(), COLORS.drag);
    ctx.globalAlpha = 1;
  }
  updateHud(t);
  requestAnimationFrame(draw);
}

// ------------------------------------------------------------------------------ HUD / status
// fps: frames painted in the last HUD_WINDOW_MS (over the time painted so far, at a stream's start);
// latency: the median pointer-to-paint of the last HUD_WINDOW_MS, else the last one measured
function updateHud(t) {
  while (S.paintTimes.length && t - S.paintTimes[0] > HUD_WINDOW_MS) S.paintTimes.shift();
  while (S.latencySamples.length && t - S.latencySamples[0][0] > HUD_WINDOW_MS) S.latencySamples.shift();
  const span = S.streamPaintStart === null ? 0 : Math.min(HUD_WINDOW_MS, t - S.streamPaintStart);
  S.fps = span >= HUD_MIN_SPAN_MS ? S.paintTimes.length * 1000 / span : null;
  const recent = S.latencySamples.map(([, ms]) => ms).sort((a, b) => a - b);
  const latency = recent.length ? recent[Math.floor(recent.length / 2)] : S.latencyMs;
  $("hud-fps").textContent = S.fps === null ? "–" : S.fps.toFixed(1);
  $("hud-latency").textContent = latency == null ? "–" : `${Math.round(latency)} ms`;
  $("hud-chunk").textContent = S.lastChunk < 0 ? "–" : S.lastChunk;
  $("hud-frame").textContent = S.lastFrame < 0 ? "–" : S.lastFrame;
}

// The stream stopped (or a new one starts): fps, latency, quality and their measurements clear.
function clearHud() {
  S.paintTimes = []; S.paintLog = []; S.latencySamples = []; S.latencyLog = []; S.latencyMs = null;
  S.pointerAt.clear(); S.drawn = null; S.streamPaintStart = null; S.fps = null; S.chunkGenLog = [];
  setQuality(null);
}

function setQuality(quality) {
  if (quality === undefined) return;             // a message that does not speak of it
  S.quality = quality;
  $("hud-quality-box").hidden = quality === null;
  $("hud-quality").textContent = quality ?? "–";
}

function setStatus(status, warmingUp = false) {
  S.status = status;
  // the server's first stream waits for its warm-up (the model conversions): say why it takes seconds
  $("hud-status").textContent = status === "queued" ? `queued #${S.position}`
    : status === "starting" && warmingUp ? "starting (warming up)" : status;
  $("start").textContent = status === "idle" || status === "offline" ? "Start (Enter)" : "End (Enter)";
  $("pause").disabled = !(status === "streaming" || status === "paused");
  $("pause").textContent = status === "paused" ? "Resume (Space)" : "Pause (Space)";
  if (status === "idle") showImage();
}

function setConn(on) {
  $("conn").textContent = on ? "online" : "offline";
  $("conn").classList.toggle("on", on);
}

function log(text, error = false) {
  const line = document.createElement("div");
  line.textContent = text;
  if (error) line.className = "err";
  const box = $("log");
  box.prepend(line);
  while (box.childNodes.length > LOG_LINES) box.removeChild(box.lastChild);
}

// ------------------------------------------------------------------------------ wiring
function isTyping(el) {
  return el.tagName === "TEXTAREA" || el.tagName === "SELECT" || (el.tagName === "INPUT" && el.type === "text");
}

document.addEventListener("keydown", (ev) => {
  if (ev.repeat) return;
  const key = ev.key === "Enter" && ev.target.tagName !== "TEXTAREA" ? "enter"
    : ev.key === " " && !isTyping(ev.target) ? "space" : null;
  if (!key) return;
  ev.preventDefault();
  // a focused button would also "click" on the key: the keys belong to the stream
  if (document.activeElement && document.activeElement.tagName === "BUTTON") document.activeElement.blur();
  if (key === "enter") toggleStream(); else togglePause();
});

function wire() {
  const o = $("overlay");
  o.addEventListener("pointerdown", onPointerDown);
  o.addEventListener("pointermove", onPointerMove);
  o.addEventListener("pointerup", onPointerUp);
  o.addEventListener("pointercancel", onPointerUp);
  o.addEventListener("pointerleave", () => { S.hover = null; });
  $("start").onclick = toggleStream;
  $("pause").onclick = togglePause;
  $("record").onclick = toggleRecord;
  $("clear").onclick = clearControls;
  $("sample").onchange = (e) => pickSample(e.target.value);
  $("image-file").onchange = (e) => e.target.files[0] && uploadImage(e.target.files[0]);
  $("video-file").onchange = (e) => e.target.files[0] && uploadVideo(e.target.files[0]);
  for (const [id, out] of [["spacing", "spacing-out"], ["size", "size-out"], ["camera-strength", "camera-strength-out"]]) {
    $(id).oninput = () => { $(out).textContent = $(id).value; };
  }
  for (const r of document.querySelectorAll("input[name=mode]")) {
    r.onchange = () => {
      $("transfer-opts").hidden = r.value !== "transfer" || !r.checked;
      $("camera-opts").hidden = r.value !== "camera" || !r.checked;
    };
  }
  window.addEventListener("resize", sizeCanvases);
}

wire();
loadSamples().then(connect);
sizeCanvases();
requestAnimationFrame(draw);
