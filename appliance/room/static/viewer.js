// The viewer page: watch a kiosk, see its thermal overlay and results, get fever alerts, talk.
//
// Signaling follows appliance/room/protocol.py (the kiosk offers, this page answers); the data
// channel messages follow appliance/publisher/channels.py. No build step, no dependencies.
//
// Flow: POST /api/v1/viewer/session {invite} -> session; WebSocket /api/v1/ws?session=...;
// welcome -> wait for the kiosk's offer -> answer; "events" channel: hello -> join -> events
// (ack each), chat, talk; "telemetry" channel: thermal frames and screening state.
// Any loss (socket, peer) -> reconnect with exponential backoff and full jitter.
//
// For tests and the latency benchmark, window.viewer exposes readStamp() (the camera's frame
// stamp, appliance/camera/stamp.py, read back from the video through a canvas), a latency
// probe, the time of the first decoded frame and the message log.

"use strict";

const $ = (id) => document.getElementById(id);
const invite = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const storageKey = (name) => `viewer.${name}.${invite.slice(0, 16)}`;

const state = {
  ws: null,
  pc: null,
  peerId: null,
  iceServers: [],
  events: null,
  telemetry: null,
  backoff: 0,
  reconnectTimer: null,
  offerTimer: null,
  fatal: false,
  hello: null,
  joined: false, // this call's join went out: the kiosk takes talk and ack-alert only after it
  afterJoin: [], // ack-alert presses made before it, sent once it went
  lastSeq: Number(sessionStorage.getItem(storageKey("seq")) || "NaN"),
  alerts: new Map(), // seq -> {event, li}
  pendingAlert: null,
  mic: null,
  cam: null,
  talking: false,
  thermalBox: null,
  joinStartedAt: performance.now(),
  calls: 0, // offers answered: a new call after a reconnect counts one more
  firstFrameAt: null,
  stats: { prevFrames: null, prevTime: null },
};

// --- backoff ---------------------------------------------------------------------------------

function nextDelay() {
  // 0.5 s doubling to 30 s, full jitter in [0.5, 1.5) of the step: many viewers of a kiosk
  // that restarted come back spread out.
  state.backoff = state.backoff ? Math.min(state.backoff * 2, 30) : 0.5;
  return state.backoff * (0.5 + Math.random()) * 1000;
}

function scheduleReconnect(reason) {
  if (state.fatal || state.reconnectTimer) return;
  const delay = nextDelay();
  setConn("reconnecting", `${reason}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
  state.reconnectTimer = setTimeout(() => {
    state.reconnectTimer = null;
    connect();
  }, delay);
}

// --- signaling -------------------------------------------------------------------------------

async function connect() {
  state.joinStartedAt = performance.now();
  setConn("connecting");
  let session;
  try {
    const r = await fetch("/api/v1/viewer/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ invite }),
    });
    if (r.status === 403 || r.status === 404) {
      fatal("This invite link is unknown, revoked or expired. Ask for a new one.");
      return;
    }
    if (!r.ok) throw new Error(`session: HTTP ${r.status}`);
    session = await r.json();
  } catch (err) {
    scheduleReconnect(`cannot reach the room service (${err.message})`);
    return;
  }
  $("room-name").textContent = session.room?.name || "Kiosk";
  document.title = `${session.room?.name || "Kiosk"} – viewer`;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/api/v1/ws?session=${encodeURIComponent(session.session)}`);
  state.ws = ws;
  ws.onmessage = (e) => {
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch {
      return;
    }
    onSignal(msg);
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = null;
    // The call itself is peer to peer and may go on; a new offer replaces it after reconnecting.
    scheduleReconnect("lost the room service");
  };
}

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

function onSignal(msg) {
  switch (msg.type) {
    case "welcome":
      state.peerId = msg.peer_id;
      state.iceServers = msg.ice_servers || [];
      state.backoff = 0;
      $("room-name").textContent = msg.room?.name || "Kiosk";
      setConn(msg.device_online ? "waiting" : "offline", msg.device_online ? "waiting for the kiosk" : "the kiosk is offline");
      break;
    case "presence":
      if (!msg.device_online) {
        setConn("offline", "the kiosk is offline");
        closePeer();
      }
      break;
    case "offer":
      answer(msg.sdp).catch((err) => {
        console.error("answer failed", err);
        requestOffer("could not answer the kiosk");
      });
      break;
    case "ice":
      if (state.pc && msg.candidate) state.pc.addIceCandidate(msg.candidate).catch(() => {});
      break;
    case "bye":
      closePeer();
      requestOffer("the call ended");
      break;
    case "error":
      onSignalError(msg);
      break;
    default:
      break;
  }
}

function onSignalError(msg) {
  if (msg.code === "room-full") {
    showNotice(`The kiosk is busy: ${msg.message || "too many viewers"}. Trying again in 30 s.`);
    setConn("full", "room full");
    clearTimeout(state.offerTimer);
    state.offerTimer = setTimeout(() => send({ type: "request-offer" }), 30000);
  } else if (msg.code === "no-device") {
    setConn("offline", "the kiosk is offline");
  } else if (msg.code === "rate-limited" && msg.ref === "request-offer") {
    // Asked again too soon after the last one (the service allows one a second): again, later.
    requestOffer("asked for a new call too soon");
  } else {
    console.warn("signaling error", msg);
  }
}

function requestOffer(reason) {
  clearTimeout(state.offerTimer);
  const delay = nextDelay();
  setConn("reconnecting", `${reason}; calling again`);
  state.offerTimer = setTimeout(() => send({ type: "request-offer" }), delay);
}

// --- the peer connection -------------------------------------------------------------------

async function answer(sdp) {
  closePeer();
  hideNotice();
  state.firstFrameAt = null;
  state.calls += 1;
  const pc = new RTCPeerConnection({ iceServers: state.iceServers });
  state.pc = pc;
  pc.ontrack = (e) => {
    if (e.track.kind === "video" && e.transceiver === videoTransceivers(pc)[0]) {
      const video = $("video");
      video.srcObject = new MediaStream([e.track, ...audioTracks(pc)]);
      watchFrames(video);
    } else if (e.track.kind === "audio") {
      const video = $("video");
      if (video.srcObject) video.srcObject.addTrack(e.track);
    }
  };
  pc.ondatachannel = (e) => onChannel(e.channel);
  pc.onicecandidate = (e) => {
    const c = e.candidate;
    send({ type: "ice", candidate: c && c.candidate ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null });
  };
  pc.onconnectionstatechange = () => {
    if (state.pc !== pc) return;
    if (pc.connectionState === "connected") {
      state.backoff = 0;
      setConn("live");
    } else if (pc.connectionState === "failed") {
      closePeer();
      send({ type: "bye" });
      requestOffer("the connection failed");
    }
  };
  await pc.setRemoteDescription({ type: "offer", sdp });
  // Send directions are set before answering so push-to-talk and the camera later only
  // replace a track: no renegotiation. The kiosk offers audio sendrecv and a second video
  // section (recvonly on its side) for the viewer's camera.
  for (const t of pc.getTransceivers()) {
    if (t.receiver.track.kind === "audio") t.direction = "sendrecv";
  }
  const videos = videoTransceivers(pc);
  if (videos[1]) videos[1].direction = "sendonly";
  if (state.mic) await audioTransceiver(pc)?.sender.replaceTrack(state.mic);
  if (state.cam && videos[1]) await videos[1].sender.replaceTrack(state.cam);
  // A live view wants the newest picture, not a smooth one: keep the jitter buffer short.
  if (videos[0] && "jitterBufferTarget" in videos[0].receiver) videos[0].receiver.jitterBufferTarget = 0;
  await pc.setLocalDescription(await pc.createAnswer());
  send({ type: "answer", sdp: pc.localDescription.sdp });
  $("camera").disabled = !videos[1];
}

function videoTransceivers(pc) {
  return pc.getTransceivers().filter((t) => t.receiver.track.kind === "video");
}

function audioTransceiver(pc) {
  return pc.getTransceivers().find((t) => t.receiver.track.kind === "audio");
}

function audioTracks(pc) {
  const t = audioTransceiver(pc);
  return t ? [t.receiver.track] : [];
}

function closePeer() {
  if (state.pc) {
    const pc = state.pc;
    state.pc = null;
    pc.ontrack = pc.ondatachannel = pc.onicecandidate = pc.onconnectionstatechange = null;
    pc.close();
  }
  state.events = state.telemetry = null;
  state.joined = false;
  setChatEnabled(false);
  $("talk").disabled = true;
  $("camera").disabled = true;
  setTalkState(null, false);
}

// --- data channels -------------------------------------------------------------------------

function onChannel(ch) {
  if (ch.label === "events") {
    state.events = ch;
    ch.onmessage = (e) => onEventMessage(JSON.parse(e.data));
    ch.onclose = () => {
      if (state.events === ch) {
        state.joined = false;
        setChatEnabled(false);
      }
    };
  } else if (ch.label === "telemetry") {
    state.telemetry = ch;
    ch.onmessage = (e) => onTelemetry(JSON.parse(e.data));
  }
}

function sendEvent(msg) {
  if (state.events && state.events.readyState === "open") state.events.send(JSON.stringify(msg));
}

// An acknowledgement is a record: one pressed before this call's join (the kiosk refuses it
// then) waits for the join instead of being lost.
function acknowledgeAlert(seq) {
  if (state.joined) {
    sendEvent({ type: "ack-alert", seq });
  } else if (!state.afterJoin.includes(seq)) {
    state.afterJoin.push(seq);
    if (state.afterJoin.length > 50) state.afterJoin.shift();
  }
}

function onEventMessage(msg) {
  log.push(msg);
  if (log.length > 500) log.shift();
  switch (msg.type) {
    case "hello":
      state.hello = msg;
      state.thermalBox = msg.thermal_box;
      placeThermal();
      sendEvent({ type: "join", name: viewerName(), last_seq: Number.isFinite(state.lastSeq) ? state.lastSeq : null });
      // The kiosk opens its microphone only for viewers who listen (a new call starts muted
      // on the kiosk's side; say again what this page wants).
      sendEvent({ type: "listen", on: !$("video").muted });
      state.joined = true;
      for (const seq of state.afterJoin.splice(0)) sendEvent({ type: "ack-alert", seq });
      // Talk and chat only now: the kiosk refuses both from a viewer that has not joined.
      setChatEnabled(true);
      $("talk").disabled = false;
      break;
    case "event":
      onScreeningEvent(msg);
      break;
    case "chat":
      addChat(msg.sender, msg.text, msg.wall_ts, msg.origin);
      break;
    case "talk":
      setTalkState(msg.talker, msg.you);
      break;
    case "alert-acked":
      markAcked(msg.seq, msg.by);
      break;
    case "error":
      console.warn("the kiosk refused a message", msg);
      // A refused chat line was shown here as sent already: say that it was not.
      if (msg.ref === "chat") addChat("Not sent", msg.message || "the kiosk refused it", Date.now() / 1000, "refused");
      break;
    default:
      break;
  }
}

function onTelemetry(msg) {
  if (msg.type === "thermal") drawThermal(msg.pixels);
  else if (msg.type === "state") showState(msg);
}

// --- screening state, results and alerts ---------------------------------------------------

const STATE_LABELS = {
  idle: "Idle",
  approaching: "Someone approaching",
  "too-far": "Too far",
  "too-close": "Too close",
  multiple: "More than one person",
  "hold-still": "Hold still",
  measuring: "Measuring",
  result: "Result",
  fault: "Sensor fault",
  "warming-up": "Warming up",
};

function temperature(c) {
  if (c === null || c === undefined) return "";
  if (state.hello?.units === "F") return `${(c * 9 / 5 + 32).toFixed(1)} °F`;
  return `${c.toFixed(1)} °C`;
}

function showState(msg) {
  $("state").textContent = STATE_LABELS[msg.state] || msg.state;
  $("state").dataset.state = msg.state;
  $("progress").value = msg.progress || 0;
  $("reading").textContent = msg.state === "result" && msg.result ? `${msg.result} ${temperature(msg.estimate_c)}` : "";
}

function onScreeningEvent(ev) {
  if (ev.topic === "screening.result") {
    const when = new Date(ev.wall_ts * 1000).toLocaleTimeString();
    $("last-result").textContent = `Last result: ${ev.result} ${temperature(ev.estimate_c)} at ${when}`;
  } else if (ev.topic === "alert.fever") {
    addAlert(ev);
  }
  // Acknowledge receipt (cumulative): a reconnect resumes after this seq.
  if (!Number.isFinite(state.lastSeq) || ev.seq > state.lastSeq) {
    state.lastSeq = ev.seq;
    sessionStorage.setItem(storageKey("seq"), String(ev.seq));
  }
  ackSoon();
}

// The newest seq at most every ACK_EVERY_MS, not an ack per event: a page that comes back is
// replayed up to 2000 events at once, and an ack each spent the kiosk's message budget for
// this viewer (20/s): refused acks, and a press of Acknowledge, Talk or Send refused with them.
const ACK_EVERY_MS = 250;
let ackTimer = null;

function ackSoon() {
  if (ackTimer !== null) return;
  ackTimer = setTimeout(() => {
    ackTimer = null;
    sendEvent({ type: "ack", seq: state.lastSeq });
  }, ACK_EVERY_MS);
}

function addAlert(ev) {
  if (state.alerts.has(ev.seq)) return;
  const li = document.createElement("li");
  const when = new Date(ev.wall_ts * 1000).toLocaleString();
  const text = document.createElement("span");
  text.textContent = `${temperature(ev.estimate_c)} (threshold ${temperature(ev.threshold_c)}) at ${when}`;
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Acknowledge";
  button.addEventListener("click", () => acknowledgeAlert(ev.seq));
  li.append(text, button);
  $("alerts").prepend(li);
  $("no-alerts").hidden = true;
  state.alerts.set(ev.seq, { event: ev, li });
  if (ev.acked_by) markAcked(ev.seq, ev.acked_by);
  else if (ev.live) raiseAlarm(ev);
}

function raiseAlarm(ev) {
  state.pendingAlert = ev.seq;
  $("alert-text").textContent = `Fever alert: ${temperature(ev.estimate_c)} at ${new Date(ev.wall_ts * 1000).toLocaleTimeString()}. Check with a clinical thermometer.`;
  $("alert-banner").hidden = false;
  beep();
}

function markAcked(seq, by) {
  const entry = state.alerts.get(seq);
  if (entry) {
    entry.li.classList.add("acked");
    const button = entry.li.querySelector("button");
    if (button) button.replaceWith(Object.assign(document.createElement("span"), { className: "acked-by", textContent: `acknowledged by ${by}` }));
  }
  if (state.pendingAlert === seq) {
    state.pendingAlert = null;
    $("alert-banner").hidden = true;
  }
}

let audioCtx = null;

function beep() {
  try {
    audioCtx = audioCtx || new AudioContext();
    const t0 = audioCtx.currentTime;
    for (let i = 0; i < 3; i++) {
      const osc = audioCtx.createOscillator();
      const gain = audioCtx.createGain();
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.2, t0 + i * 0.3);
      gain.gain.setValueAtTime(0, t0 + i * 0.3 + 0.18);
      osc.connect(gain).connect(audioCtx.destination);
      osc.start(t0 + i * 0.3);
      osc.stop(t0 + i * 0.3 + 0.2);
    }
  } catch (err) {
    console.warn("no alarm sound", err);
  }
}

// --- thermal overlay -----------------------------------------------------------------------

// An "inferno"-like map: dark purple through red and orange to pale yellow.
const STOPS = [
  [0.0, [0, 0, 4]],
  [0.25, [87, 16, 110]],
  [0.5, [188, 55, 84]],
  [0.75, [249, 142, 9]],
  [1.0, [252, 255, 164]],
];
const LUT = buildLut();
const OUT = 64; // the canvas is 64x64; CSS scales it smoothly over the picture
const range = { lo: null, hi: null };

function buildLut() {
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = i / 255;
    let k = 0;
    while (k < STOPS.length - 2 && x > STOPS[k + 1][0]) k++;
    const [x0, c0] = STOPS[k];
    const [x1, c1] = STOPS[k + 1];
    const f = (x - x0) / (x1 - x0);
    for (let ch = 0; ch < 3; ch++) lut[i * 3 + ch] = c0[ch] + f * (c1[ch] - c0[ch]);
  }
  return lut;
}

function cubic(p0, p1, p2, p3, t) {
  // Catmull-Rom (the Keys kernel with a = -0.5): passes through the samples.
  return p1 + 0.5 * t * (p2 - p0 + t * (2 * p0 - 5 * p1 + 4 * p2 - p3 + t * (3 * (p1 - p2) + p3 - p0)));
}

function bicubic(pixels, n, out) {
  const at = (x, y) => pixels[Math.min(n - 1, Math.max(0, y)) * n + Math.min(n - 1, Math.max(0, x))];
  const result = new Float32Array(out * out);
  const col = new Float32Array(4);
  for (let oy = 0; oy < out; oy++) {
    const sy = ((oy + 0.5) * n) / out - 0.5;
    const y = Math.floor(sy);
    const ty = sy - y;
    for (let ox = 0; ox < out; ox++) {
      const sx = ((ox + 0.5) * n) / out - 0.5;
      const x = Math.floor(sx);
      const tx = sx - x;
      for (let j = -1; j <= 2; j++) col[j + 1] = cubic(at(x - 1, y + j), at(x, y + j), at(x + 1, y + j), at(x + 2, y + j), tx);
      result[oy * out + ox] = cubic(col[0], col[1], col[2], col[3], ty);
    }
  }
  return result;
}

function drawThermal(pixels) {
  if (!Array.isArray(pixels) || pixels.length !== 64) return;
  const canvas = $("thermal");
  const ctx = canvas.getContext("2d");
  const hot = bicubic(pixels, 8, OUT);
  // Auto range, smoothed so the colours do not flicker: at least 8 °C wide, around the scene.
  let lo = Infinity;
  let hi = -Infinity;
  for (const p of pixels) {
    lo = Math.min(lo, p);
    hi = Math.max(hi, p);
  }
  hi = Math.max(hi, lo + 8);
  range.lo = range.lo === null ? lo : range.lo * 0.8 + lo * 0.2;
  range.hi = range.hi === null ? hi : range.hi * 0.8 + hi * 0.2;
  const img = ctx.createImageData(OUT, OUT);
  const span = range.hi - range.lo;
  for (let i = 0; i < hot.length; i++) {
    const v = Math.max(0, Math.min(255, Math.round(((hot[i] - range.lo) / span) * 255)));
    img.data[i * 4] = LUT[v * 3];
    img.data[i * 4 + 1] = LUT[v * 3 + 1];
    img.data[i * 4 + 2] = LUT[v * 3 + 2];
    img.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  $("scale-min").textContent = temperature(range.lo);
  $("scale-max").textContent = temperature(range.hi);
}

function drawScale() {
  const canvas = $("scale");
  const ctx = canvas.getContext("2d");
  for (let x = 0; x < canvas.width; x++) {
    const v = Math.round((x / (canvas.width - 1)) * 255);
    ctx.fillStyle = `rgb(${LUT[v * 3]},${LUT[v * 3 + 1]},${LUT[v * 3 + 2]})`;
    ctx.fillRect(x, 0, 1, canvas.height);
  }
}

function placeThermal() {
  const box = state.thermalBox || [0, 0, 1, 1];
  const c = $("thermal");
  c.style.left = `${box[0] * 100}%`;
  c.style.top = `${box[1] * 100}%`;
  c.style.width = `${box[2] * 100}%`;
  c.style.height = `${box[3] * 100}%`;
}

function applyOverlayControls() {
  const c = $("thermal");
  c.style.opacity = String(Number($("opacity").value) / 100);
  c.hidden = !$("overlay-on").checked;
}

// --- video: first frame, quality, the frame stamp ------------------------------------------

function watchFrames(video) {
  // One callback chain per element: a new call reuses the element and its chain.
  if (!("requestVideoFrameCallback" in video) || video.dataset.watching) return;
  video.dataset.watching = "1";
  const onFrame = (now, meta) => {
    if (state.firstFrameAt === null) {
      state.firstFrameAt = now;
      $("no-video").hidden = true;
      const stage = $("stage");
      stage.style.aspectRatio = `${meta.width} / ${meta.height}`;
    }
    if (probe.active) probe.sample(video, meta);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

async function updateQuality() {
  const pc = state.pc;
  if (!pc || pc.connectionState !== "connected") return;
  const report = await pc.getStats();
  let rtt = null;
  let jitter = null;
  let lost = 0;
  let received = 0;
  let frames = null;
  const videoRecv = videoTransceivers(pc)[0]?.receiver.track.id;
  report.forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime;
    if (s.type === "inbound-rtp" && s.kind === "video" && (!videoRecv || s.trackIdentifier === videoRecv)) {
      jitter = s.jitter;
      lost = s.packetsLost || 0;
      received = s.packetsReceived || 0;
      frames = s.framesDecoded;
    }
  });
  const now = performance.now();
  let fps = null;
  if (frames !== null && state.stats.prevFrames !== null && now > state.stats.prevTime) {
    fps = ((frames - state.stats.prevFrames) * 1000) / (now - state.stats.prevTime);
  }
  state.stats.prevFrames = frames;
  state.stats.prevTime = now;
  $("q-rtt").textContent = rtt === null ? "–" : `${Math.round(rtt * 1000)} ms`;
  $("q-jitter").textContent = jitter === null ? "–" : `${Math.round(jitter * 1000)} ms`;
  $("q-loss").textContent = received + lost > 0 ? `${((lost * 100) / (received + lost)).toFixed(1)} %` : "–";
  $("q-fps").textContent = fps === null ? "–" : fps.toFixed(0);
}

// The stamp (appliance/camera/stamp.py): two rows of 40 square cells across the top, 80 bits
// = counter u32, wall-clock ms mod 2^32 u32, CRC-16/CCITT-FALSE of those 8 bytes, MSB first.
const COLS = 40;
const ROWS = 2;
const MIN_CONTRAST = 48;
let stampCanvas = null;

function crc16(bytes) {
  let crc = 0xffff;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

function readStamp(video = $("video")) {
  const width = video.videoWidth;
  const height = video.videoHeight;
  if (!width || !height) return null;
  const pitch = width / COLS;
  const rows = Math.ceil(ROWS * pitch);
  if (rows > height || pitch < 2) return null;
  stampCanvas = stampCanvas || document.createElement("canvas");
  if (stampCanvas.width !== width || stampCanvas.height !== rows) {
    stampCanvas.width = width;
    stampCanvas.height = rows;
  }
  const ctx = stampCanvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(video, 0, 0, width, rows, 0, 0, width, rows);
  const data = ctx.getImageData(0, 0, width, rows).data;
  const levels = new Float64Array(COLS * ROWS);
  for (let row = 0; row < ROWS; row++) {
    // The middle half of each cell, where ringing from the cell edges is weakest.
    const y0 = Math.floor((row + 0.25) * pitch);
    const y1 = Math.max(y0 + 1, Math.round((row + 0.75) * pitch));
    for (let col = 0; col < COLS; col++) {
      const x0 = Math.floor((col + 0.25) * pitch);
      const x1 = Math.max(x0 + 1, Math.round((col + 0.75) * pitch));
      let sum = 0;
      let n = 0;
      for (let y = y0; y < y1; y++) {
        for (let x = x0; x < x1; x++) {
          const i = (y * width + x) * 4;
          sum += (data[i] + data[i + 1] + data[i + 2]) / 3;
          n++;
        }
      }
      levels[row * COLS + col] = sum / n;
    }
  }
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of levels) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  if (hi - lo < MIN_CONTRAST) return null;
  const threshold = (lo + hi) / 2;
  const bytes = new Uint8Array(10);
  for (let i = 0; i < COLS * ROWS; i++) if (levels[i] > threshold) bytes[i >> 3] |= 0x80 >> (i & 7);
  if (crc16(bytes.subarray(0, 8)) !== ((bytes[8] << 8) | bytes[9])) return null;
  const view = new DataView(bytes.buffer);
  return { counter: view.getUint32(0), ms: view.getUint32(4) };
}

function msSince(nowMs, stampMs) {
  // Both wall clocks modulo 2^32 ms; the difference across the wrap, signed.
  const M = 4294967296;
  let d = (((nowMs % M) - stampMs) % M + M) % M;
  if (d >= M / 2) d -= M;
  return d;
}

const probe = {
  active: false,
  samples: [],
  sample(video, meta) {
    // The frame is being presented now; its capture time is in its stamp.
    const now = performance.timeOrigin + performance.now();
    const s = readStamp(video);
    if (s) this.samples.push({ counter: s.counter, latencyMs: msSince(now, s.ms), width: meta.width });
  },
};

// --- chat ----------------------------------------------------------------------------------

function viewerName() {
  return ($("chat-name").value || "").trim().slice(0, 64) || "Staff";
}

function addChat(sender, text, wallTs, origin) {
  const li = document.createElement("li");
  li.className = origin;
  const who = document.createElement("strong");
  who.textContent = sender;
  const when = document.createElement("time");
  when.textContent = new Date(wallTs * 1000).toLocaleTimeString();
  li.append(who, " ", when, document.createElement("br"), text);
  const logEl = $("chat-log");
  logEl.append(li);
  while (logEl.children.length > 200) logEl.firstChild.remove();
  li.scrollIntoView({ block: "nearest" });
}

function setChatEnabled(on) {
  $("chat-text").disabled = !on;
  $("chat-send").disabled = !on;
}

// --- push-to-talk and the viewer's camera --------------------------------------------------

async function startTalking() {
  if (state.talking || !state.pc) return;
  state.talking = true;
  try {
    if (!state.mic) {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
      state.mic = stream.getAudioTracks()[0];
    }
    if (!state.talking) return; // released while the permission prompt was up
    state.mic.enabled = true;
    await audioTransceiver(state.pc)?.sender.replaceTrack(state.mic);
    sendEvent({ type: "talk", active: true });
    $("talk").setAttribute("aria-pressed", "true");
  } catch (err) {
    state.talking = false;
    showNotice(`No microphone: ${err.message}`);
  }
}

function stopTalking() {
  if (!state.talking) return;
  state.talking = false;
  if (state.mic) state.mic.enabled = false; // silence, not a renegotiation
  sendEvent({ type: "talk", active: false });
  $("talk").setAttribute("aria-pressed", "false");
}

function setTalkState(talker, you) {
  $("talk-state").textContent = you ? "You are talking to the kiosk" : talker ? `${talker} is talking` : "";
  $("talk").classList.toggle("live", Boolean(you));
}

async function toggleCamera() {
  const button = $("camera");
  const sender = state.pc ? videoTransceivers(state.pc)[1]?.sender : null;
  if (state.cam) {
    state.cam.stop();
    state.cam = null;
    if (sender) await sender.replaceTrack(null);
    button.setAttribute("aria-pressed", "false");
    button.textContent = "Show my camera on the kiosk";
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240, frameRate: 15 } });
    state.cam = stream.getVideoTracks()[0];
    if (sender) await sender.replaceTrack(state.cam);
    button.setAttribute("aria-pressed", "true");
    button.textContent = "Stop showing my camera";
  } catch (err) {
    showNotice(`No camera: ${err.message}`);
  }
}

// --- the page ------------------------------------------------------------------------------

function setConn(kind, text) {
  const el = $("conn");
  el.dataset.kind = kind;
  el.textContent = text || kind;
}

function showNotice(text) {
  const el = $("notice");
  el.textContent = text;
  el.hidden = false;
}

function hideNotice() {
  $("notice").hidden = true;
}

function fatal(text) {
  state.fatal = true;
  setConn("error", "cannot join");
  showNotice(text);
}

const log = [];

function setup() {
  drawScale();
  placeThermal();
  applyOverlayControls();
  $("chat-name").value = localStorage.getItem("viewer.name") || "";
  $("chat-name").addEventListener("change", () => localStorage.setItem("viewer.name", viewerName()));
  $("opacity").addEventListener("input", applyOverlayControls);
  $("overlay-on").addEventListener("change", applyOverlayControls);
  $("unmute").addEventListener("click", () => {
    const video = $("video");
    video.muted = !video.muted;
    $("unmute").setAttribute("aria-pressed", String(!video.muted));
    $("unmute").textContent = video.muted ? "Unmute kiosk audio" : "Mute kiosk audio";
    sendEvent({ type: "listen", on: !video.muted });
    audioCtx = audioCtx || new AudioContext(); // a click allows the alarm sound later
    audioCtx.resume();
  });
  $("alert-ack").addEventListener("click", () => {
    if (state.pendingAlert !== null) acknowledgeAlert(state.pendingAlert);
  });
  $("chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("chat-text");
    const text = input.value.trim();
    if (!text) return;
    sendEvent({ type: "chat", text });
    addChat(viewerName(), text, Date.now() / 1000, "self");
    input.value = "";
  });
  const talk = $("talk");
  talk.addEventListener("pointerdown", (e) => {
    talk.setPointerCapture(e.pointerId);
    startTalking();
  });
  talk.addEventListener("pointerup", stopTalking);
  talk.addEventListener("pointercancel", stopTalking);
  talk.addEventListener("keydown", (e) => {
    if ((e.key === " " || e.key === "Enter") && !e.repeat) {
      e.preventDefault();
      startTalking();
    }
  });
  talk.addEventListener("keyup", (e) => {
    if (e.key === " " || e.key === "Enter") stopTalking();
  });
  $("camera").addEventListener("click", toggleCamera);
  window.addEventListener("pagehide", () => send({ type: "bye" }));
  setInterval(() => updateQuality().catch(() => {}), 1000);
  connect();
}

window.viewer = {
  readStamp: () => readStamp(),
  startLatencyProbe() {
    probe.samples = [];
    probe.active = true;
  },
  stopLatencyProbe() {
    probe.active = false;
    return probe.samples;
  },
  get joinStartedAt() {
    return state.joinStartedAt;
  },
  get firstFrameAt() {
    return state.firstFrameAt;
  },
  get calls() {
    return state.calls;
  },
  get connectionState() {
    return state.pc ? state.pc.connectionState : "none";
  },
  async stats() {
    // The received camera stream as the browser decodes it: codec, fmtp line, frames.
    if (!state.pc) return null;
    const report = await state.pc.getStats();
    const codecs = new Map();
    let inbound = null;
    report.forEach((s) => {
      if (s.type === "codec") codecs.set(s.id, s);
      if (s.type === "inbound-rtp" && s.kind === "video") inbound = s;
    });
    const codec = inbound ? codecs.get(inbound.codecId) : null;
    return { codec: codec?.mimeType || null, fmtp: codec?.sdpFmtpLine || "", framesDecoded: inbound?.framesDecoded || 0 };
  },
  async audioStats() {
    // The kiosk's sound as received: packets and the codec, or null before there is any.
    if (!state.pc) return null;
    const report = await state.pc.getStats();
    let inbound = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
    });
    return inbound ? { packetsReceived: inbound.packetsReceived || 0, codecId: inbound.codecId } : null;
  },
  messages: log,
  sendEvent,
  startTalking,
  stopTalking,
};

setup();
