// ferkit browser page: upload a photo or stream the webcam to /v1/predict, draw the
// faces on a canvas and the scores as bars. Plain DOM + canvas, no libraries, so the
// page works with no internet access.
"use strict";

const COLORS = {
  angry: "#dc2626", disgust: "#65a30d", fear: "#7c3aed", happy: "#f59e0b",
  sad: "#2563eb", surprise: "#db2777", neutral: "#6b7280", contempt: "#0d9488",
};
const colorOf = (label) => COLORS[label] || "#0ea5e9";

const el = (id) => document.getElementById(id);
const canvas = el("canvas");
const ctx = canvas.getContext("2d");
const video = el("video");
const state = { labels: [], faces: [], selected: 0, stream: null, busy: false, source: null };

function setStatus(text, isError = false) {
  const s = el("status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

function headers() {
  const key = el("apikey").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function getJSON(path) {
  const r = await fetch(path, { headers: headers() });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.detail || `${r.status} ${r.statusText}`);
  return body;
}

async function loadInfo() {
  try {
    const health = await getJSON("healthz");
    el("keybox").classList.toggle("hidden", !health.auth);
    if (health.auth && !el("apikey").value) {
      el("model").textContent = `model ${health.model} ${health.version} (API key needed)`;
      return;
    }
    const info = await getJSON("v1/models");
    const m = info.models[0];
    state.labels = m.labels;
    el("model").textContent = `model ${m.name} ${m.version}` + (m.backend ? ` · ${m.backend}` : "") +
      ` · ${m.labels.length} emotions`;
    drawChart(null);
  } catch (e) {
    el("model").textContent = `model info unavailable: ${e.message}`;
  }
}

// Send one image (Blob) and return the parsed response, or throw with the server's detail.
async function predict(blob, filename) {
  const form = new FormData();
  form.append("file", blob, filename || "frame.jpg");
  const r = await fetch("v1/predict", { method: "POST", body: form, headers: headers() });
  const body = await r.json().catch(() => ({ detail: `${r.status} ${r.statusText}` }));
  if (!r.ok) throw new Error(`${r.status}: ${body.detail || body.error}`);
  return body;
}

// Draw `source` (image/video/canvas of natural size w x h) scaled to the canvas, then the boxes.
function draw(source, w, h, faces) {
  const maxW = 960;
  const scale = Math.min(1, maxW / w);
  canvas.width = Math.round(w * scale);
  canvas.height = Math.round(h * scale);
  ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
  const lw = Math.max(2, Math.round(canvas.width / 240));
  ctx.font = `bold ${Math.max(12, Math.round(canvas.width / 40))}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  faces.forEach((f, i) => {
    const [x, y, bw, bh] = f.box.map((v) => v * scale);
    const c = colorOf(f.label);
    ctx.lineWidth = i === state.selected ? lw * 1.6 : lw;
    ctx.strokeStyle = c;
    ctx.strokeRect(x, y, bw, bh);
    const text = `${f.label} ${(100 * f.confidence).toFixed(0)}%`;
    const tw = ctx.measureText(text).width + 8;
    const th = parseInt(ctx.font.match(/(\d+)px/)[1], 10) + 6;
    const ty = y - th >= 0 ? y - th : y;
    ctx.fillStyle = c;
    ctx.fillRect(x, ty, tw, th);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x + 4, ty + th - 3);
  });
}

function listFaces(faces) {
  const ol = el("faces");
  ol.replaceChildren();
  faces.forEach((f, i) => {
    const li = document.createElement("li");
    li.dataset.label = f.label;
    li.dataset.box = f.box.join(",");
    li.textContent = `${f.label} (${(100 * f.confidence).toFixed(1)}%) at ${f.box.join(", ")}`;
    li.classList.toggle("selected", i === state.selected);
    li.addEventListener("click", () => { state.selected = i; redraw(); });
    ol.appendChild(li);
  });
  if (!faces.length) {
    const li = document.createElement("li");
    li.className = "muted none";
    li.textContent = "no face found";
    ol.appendChild(li);
  }
}

// One row per emotion; rows are reused so the CSS width transition animates live updates.
function drawChart(face) {
  const chart = el("chart");
  const labels = face ? Object.keys(face.scores) : state.labels;
  el("chart-face").textContent = face ? `(face ${state.selected + 1})` : "";
  if (chart.dataset.labels !== labels.join(",")) {
    chart.replaceChildren();
    for (const label of labels) {
      const row = document.createElement("div");
      row.className = "bar-row";
      row.dataset.label = label;
      const name = document.createElement("span");
      name.textContent = label;
      const track = document.createElement("div");
      track.className = "bar-track";
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.background = colorOf(label);
      track.appendChild(bar);
      const value = document.createElement("span");
      value.className = "bar-value";
      row.append(name, track, value);
      chart.appendChild(row);
    }
    chart.dataset.labels = labels.join(",");
  }
  for (const row of chart.children) {
    const p = face ? face.scores[row.dataset.label] || 0 : 0;
    row.querySelector(".bar").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".bar-value").textContent = face ? `${(100 * p).toFixed(0)}%` : "";
  }
}

function redraw() {
  if (state.source) draw(state.source.el, state.source.w, state.source.h, state.faces);
  listFaces(state.faces);
  drawChart(state.faces[state.selected] || null);
}

function show(result, source, w, h) {
  state.faces = result.faces;
  if (state.selected >= state.faces.length) state.selected = 0;
  state.source = { el: source, w, h };
  redraw();
  const t = result.timing_ms;
  setStatus(`${result.faces.length} face(s) · ${result.image.width}x${result.image.height} · ` +
            `${t.total.toFixed(0)} ms on the server (batch of ${result.batch_size})`);
}

el("file").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  if (!file) return;
  if (state.stream) stopWebcam();
  setStatus(`analysing ${file.name}…`);
  try {
    const result = await predict(file, file.name);
    const img = new Image();
    img.src = URL.createObjectURL(file);
    await img.decode();
    show(result, img, img.naturalWidth, img.naturalHeight);
  } catch (e) {
    setStatus(e.message, true);
  }
  ev.target.value = "";  // choosing the same file again fires 'change' again
});

// Webcam: grab a frame, send it, draw that same frame with its result, repeat.
// One request in flight at a time keeps the page from flooding a busy server.
const grab = document.createElement("canvas");

async function webcamLoop() {
  if (!state.stream) return;
  if (!state.busy && video.videoWidth) {
    state.busy = true;
    const scale = Math.min(1, 640 / video.videoWidth);
    grab.width = Math.round(video.videoWidth * scale);
    grab.height = Math.round(video.videoHeight * scale);
    grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
    try {
      const blob = await new Promise((ok) => grab.toBlob(ok, "image/jpeg", 0.85));
      const result = await predict(blob, "frame.jpg");
      if (state.stream) show(result, grab, grab.width, grab.height);
    } catch (e) {
      setStatus(e.message, true);
    }
    state.busy = false;
  }
  requestAnimationFrame(webcamLoop);
}

async function startWebcam() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("this browser gives no camera access here (it needs https or localhost)", true);
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640 }, audio: false });
  } catch (e) {
    setStatus(`camera unavailable: ${e.message}`, true);
    return;
  }
  video.srcObject = state.stream;
  await video.play();
  el("webcam").textContent = "Stop webcam";
  el("webcam").classList.add("on");
  setStatus("webcam running");
  webcamLoop();
}

function stopWebcam() {
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  video.srcObject = null;
  el("webcam").textContent = "Start webcam";
  el("webcam").classList.remove("on");
}

el("webcam").addEventListener("click", () => (state.stream ? stopWebcam() : startWebcam()));
el("apikey").addEventListener("change", loadInfo);
loadInfo();
