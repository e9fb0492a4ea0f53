// The setup pages' behaviour. No inline script: the Content-Security-Policy forbids it.
// - Pages with <body data-live="1"> open /ws and put each status field into the elements
//   with data-field="<key>"; the live view also draws the thermal heatmap.
// - The camera snapshot refreshes itself; the calibration form says it is capturing.
(function () {
  "use strict";

  // The thermal ramp, as appliance/screen/palette.py: dark to bright, readable without colour.
  const RAMP = [
    [0.0, [0, 0, 4]], [0.2, [50, 10, 94]], [0.4, [120, 28, 109]], [0.6, [188, 55, 84]],
    [0.8, [237, 105, 37]], [0.9, [251, 155, 6]], [1.0, [252, 255, 164]],
  ];

  function ramp(t) {
    t = Math.max(0, Math.min(1, t));
    for (let i = 1; i < RAMP.length; i++) {
      const [p1, c1] = RAMP[i];
      const [p0, c0] = RAMP[i - 1];
      if (t <= p1) {
        const f = (t - p0) / (p1 - p0);
        return c0.map((c, k) => Math.round(c + (c1[k] - c) * f));
      }
    }
    return RAMP[RAMP.length - 1][1];
  }

  function applyFields(fields) {
    for (const [key, value] of Object.entries(fields)) {
      document.querySelectorAll('[data-field="' + CSS.escape(key) + '"]').forEach((el) => {
        el.textContent = value;
      });
    }
    document.body.dataset.updates = String(Number(document.body.dataset.updates || "0") + 1);
  }

  function drawThermal(msg) {
    const canvas = document.getElementById("heatmap");
    const table = document.getElementById("readings");
    if (!canvas) return;
    const ctx = canvas.getContext("2d");
    const px = msg.pixels;
    let lo = Math.min(...px);
    let hi = Math.max(...px);
    if (hi - lo < 2) { const mid = (hi + lo) / 2; lo = mid - 1; hi = mid + 1; }
    const cell = canvas.width / 8;
    const mask = new Set(msg.mask);
    ctx.font = Math.round(cell / 3.6) + "px sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    for (let i = 0; i < 64; i++) {
      const x = (i % 8) * cell;
      const y = Math.floor(i / 8) * cell;
      const rgb = ramp((px[i] - lo) / (hi - lo));
      ctx.fillStyle = "rgb(" + rgb.join(",") + ")";
      ctx.fillRect(x, y, cell, cell);
      const light = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2] > 128;
      ctx.fillStyle = light ? "#000" : "#fff";
      ctx.fillText(px[i].toFixed(1), x + cell / 2, y + cell / 2);
      if (mask.has(i)) {
        ctx.lineWidth = 4;
        ctx.strokeStyle = "#fff";
        ctx.strokeRect(x + 3, y + 3, cell - 6, cell - 6);
        ctx.lineWidth = 2;
        ctx.strokeStyle = "#000";
        ctx.strokeRect(x + 3, y + 3, cell - 6, cell - 6);
      }
    }
    canvas.dataset.frameSeq = String(msg.frame_seq);
    canvas.dataset.mask = msg.mask.join(",");
    const seq = document.getElementById("frame-seq");
    if (seq) seq.textContent = String(msg.frame_seq);
    const th = document.getElementById("thermistor");
    if (th) th.textContent = msg.thermistor.toFixed(1);
    const age = document.getElementById("frame-age");
    if (age) age.textContent = msg.age_s.toFixed(1);
    if (table) {
      const rows = [];
      for (let r = 0; r < 8; r++) {
        const tr = document.createElement("tr");
        for (let c = 0; c < 8; c++) {
          const td = document.createElement("td");
          td.textContent = px[r * 8 + c].toFixed(1);
          if (mask.has(r * 8 + c)) td.className = "masked";
          tr.appendChild(td);
        }
        rows.push(tr);
      }
      table.replaceChildren(...rows);
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(scheme + "//" + location.host + "/ws");
    ws.addEventListener("open", () => { document.body.dataset.socket = "open"; });
    ws.addEventListener("message", (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "status") applyFields(msg.fields);
      else if (msg.type === "thermal") drawThermal(msg);
    });
    ws.addEventListener("close", (event) => {
      document.body.dataset.socket = "closed";
      if (event.code === 4401) { location.href = "/login"; return; }
      setTimeout(connect, 2000);
    });
  }

  function snapshots() {
    const img = document.getElementById("snapshot");
    if (!img) return;
    const refresh = () => { img.src = "/snapshot.png?t=" + Date.now(); };
    const button = document.getElementById("refresh-snapshot");
    if (button) button.addEventListener("click", refresh);
    setInterval(refresh, 3000);
  }

  function calibrationForm() {
    const form = document.getElementById("calibrate-form");
    if (!form) return;
    form.addEventListener("submit", () => {
      const note = document.getElementById("calibrating");
      if (note) note.hidden = false;
      const button = document.getElementById("calibrate");
      if (button) setTimeout(() => { button.disabled = true; }, 0);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (document.body.dataset.live === "1") connect();
    snapshots();
    calibrationForm();
  });
})();
