// fetometry page: one form -> POST /api/measure (JSON) or /api/report (PDF); the ellipse
// editor -> POST /api/correct; a login box when the server needs a token (POST /api/login).
// Plain JavaScript, no framework, no CDN. Text from the server is only ever set with
// textContent (never innerHTML), so a file name or a note cannot inject markup.
"use strict";

const FIELDS = ["pixel_size_mm", "ga_weeks", "ga_source", "lmp", "exam_date", "explain", "model", "pregnancy_id"];
const state = { info: null, images: {}, lastForm: null, exam: null };

function $(id) { return document.getElementById(id); }

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setBusy(busy) {
  $("busy").hidden = !busy;
  $("measure").disabled = busy;
  $("report").disabled = busy || state.lastForm === null;
}

function fmt(value, digits) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
}

// The form as multipart data; empty fields are left out so the server applies its defaults.
function buildForm() {
  const file = $("file").files[0];
  if (!file) throw new Error("choose an image file first");
  const limit = state.info ? state.info.max_upload_mb : null;
  if (limit && file.size > limit * 1024 * 1024) {
    throw new Error(`the file is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${limit} MB`);
  }
  const data = new FormData();
  data.append("file", file, file.name);
  for (const name of FIELDS) {
    const value = $(name).value.trim();
    if (value !== "" && !$(name).closest("[hidden]")) data.append(name, value);
  }
  if ($("uncertainty").checked) data.append("uncertainty", "true");
  return data;
}

// Server errors are {"detail": reason, "error": code}; fall back to the HTTP status.
async function errorText(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    return JSON.stringify(body.detail);
  } catch (_) {
    return `the server answered ${response.status} ${response.statusText}`;
  }
}

function renderView(view) {
  const url = state.images[view];
  if (!url) return;
  $("view-image").src = url;
  $("view-image").alt = `the image with the ${view === "overlay" ? "fitted head ellipse" : view + " map"}`;
  for (const button of document.querySelectorAll("button.view")) {
    button.setAttribute("aria-pressed", String(button.dataset.view === view));
  }
}

function fillList(id, items, text) {
  const list = $(id);
  list.replaceChildren();
  for (const item of items || []) {
    const li = document.createElement("li");
    li.textContent = text(item);
    list.appendChild(li);
  }
}

function render(row) {
  state.images = row.images || {};
  $("results").hidden = false;
  $("r-filename").textContent = row.filename;
  $("r-status").textContent = row.status === "ok" ? "measured" : `${row.status}: ${row.detail}`;
  $("hc").textContent = fmt(row.hc_mm, 1);
  $("hc-sd").textContent = row.hc_sd_mm != null ? `(± ${fmt(row.hc_sd_mm, 1)} mm, 1 SD)` : "";
  $("bpd").textContent = fmt(row.bpd_mm, 1);
  $("ofd").textContent = fmt(row.ofd_mm, 1);
  $("ci").textContent = fmt(row.cephalic_index, 1);
  $("r-pixel-size").textContent = row.pixel_size_mm != null ? `${fmt(row.pixel_size_mm, 4)} mm (${row.pixel_size_source})` : "none: no mm values";
  $("ga-hadlock").textContent = row.ga_hadlock_weeks != null ? `${fmt(row.ga_hadlock_weeks, 1)} weeks` : "-";
  $("ga-intergrowth").textContent = row.ga_intergrowth_weeks != null ? `${fmt(row.ga_intergrowth_weeks, 1)} weeks` : "-";
  $("ga-used").textContent = row.ga_weeks != null ? `${fmt(row.ga_weeks, 1)} weeks (${row.ga_source})` : "none given: no centile";
  $("hc-centile").textContent = fmt(row.hc_centile, 1);
  $("hc-z").textContent = fmt(row.hc_z, 2);
  $("r-model").textContent = `${row.model} (fetometry ${row.version}, ${row.date})`;
  $("r-confidence").textContent = fmt(row.confidence, 3);
  const flags = (row.flags || []).concat(row.visit_warnings || []);
  fillList("flags", flags, (flag) => `[${flag.severity}] ${flag.message}`);
  const notes = (row.notes || []).slice();
  if (row.visit_note) notes.push(row.visit_note);
  if (row.visit_stored) notes.push(`visit stored for pregnancy ${row.pregnancy_id}`);
  fillList("notes", notes, (note) => note);
  for (const button of document.querySelectorAll("button.view")) {
    button.disabled = !state.images[button.dataset.view];
  }
  renderView("overlay");
  $("disclaimer").textContent = row.disclaimer;
  showCorrection(row);
}

async function measure(event) {
  event.preventDefault();
  showError("");
  let form;
  try { form = buildForm(); } catch (error) { showError(error.message); return; }
  form.append("images", "true");
  setBusy(true);
  try {
    const response = await fetch("/api/measure", { method: "POST", body: form });
    if (!response.ok) { showError(await errorText(response)); return; }
    const row = await response.json();
    render(row);
    startEditor(row);
    state.lastForm = true;
  } catch (error) {
    showError(`the request failed: ${error.message}`);
  } finally {
    setBusy(false);
  }
}

function attachmentName(response) {
  const header = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(header);
  return match ? match[1] : "fetometry_report.pdf";
}

async function downloadReport() {
  showError("");
  let form = null;
  const corrected = state.exam && state.exam.corrected;
  if (!corrected) {
    try { form = buildForm(); } catch (error) { showError(error.message); return; }
  }
  setBusy(true);
  try {
    // A corrected exam's report comes from the server's copy of it (never re-measured).
    const response = corrected
      ? await fetch(`/api/exams/${encodeURIComponent(state.exam.id)}/report`)
      : await fetch("/api/report", { method: "POST", body: form });
    if (!response.ok) { showError(await errorText(response)); return; }
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = attachmentName(response);
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    showError(`the request failed: ${error.message}`);
  } finally {
    setBusy(false);
  }
}

function addOptions(select, values) {
  for (const value of values) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = value;
    select.appendChild(option);
  }
}

async function loadInfo() {
  try {
    const response = await fetch("/api/info");
    if (response.status === 401 || response.status === 403) { showLogin(true); return; }
    state.info = await response.json();
  } catch (error) {
    showError(`cannot reach the fetometry server: ${error.message}`);
    return;
  }
  showLogin(false);
  $("session").hidden = !state.info.auth_enabled;
  $("whoami").textContent = state.info.actor || "";
  $("model").replaceChildren();
  $("explain").replaceChildren(new Option("none", ""));
  addOptions($("model"), state.info.models);
  addOptions($("explain"), state.info.explain_methods);
  $("version").textContent = state.info.version;
  $("disclaimer").textContent = state.info.disclaimer;
  $("footer-disclaimer").textContent = state.info.disclaimer;
  $("pregnancy-row").hidden = !state.info.visits_enabled;
  const [low, high] = state.info.ga_range_weeks;
  $("ga_weeks").min = low;
  $("ga_weeks").max = high;
  $("ga_weeks").placeholder = `${low}-${high}`;
}

// ----------------------------------------------------------------------------- login

function showLogin(show) {
  $("login").hidden = !show;
  $("exam-form").hidden = show;
  if (show) { $("results").hidden = true; $("session").hidden = true; }
}

async function login(event) {
  event.preventDefault();
  const box = $("login-error");
  box.hidden = true;
  const response = await fetch("/api/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value.trim() }),
  });
  $("token").value = "";  // the token never stays in the page
  if (!response.ok) { box.textContent = await errorText(response); box.hidden = false; return; }
  await loadInfo();
}

async function logout() {
  await fetch("/api/logout", { method: "POST" });
  state.exam = null;
  showLogin(true);
}

// --------------------------------------------------------------------- ellipse editor
// The ellipse lives on the ORIGINAL image's pixel grid (x = column, y = row); the canvas
// draws it scaled. Values shown while dragging are a client-side estimate (Ramanujan II,
// the server's formula); Accept has the server recompute them from its own pixel size.

const HANDLE_PX = 7;

function ramanujan(a, b) {
  const h = ((a - b) * (a - b)) / ((a + b) * (a + b));
  return Math.PI * (a + b) * (1 + (3 * h) / (10 + Math.sqrt(4 - 3 * h)));
}

function handles(e) {
  const c = Math.cos(e.angle_rad), s = Math.sin(e.angle_rad);
  return {
    centre: [e.center_x_px, e.center_y_px],
    axisA: [e.center_x_px + e.semi_axes_a_px * c, e.center_y_px + e.semi_axes_a_px * s],
    axisB: [e.center_x_px - e.semi_axes_b_px * s, e.center_y_px + e.semi_axes_b_px * c],
    rotate: [e.center_x_px - e.semi_axes_a_px * c, e.center_y_px - e.semi_axes_a_px * s],
  };
}

function drawEditor() {
  const ex = state.exam;
  if (!ex || !ex.img) return;
  const canvas = $("editor");
  const ctx = canvas.getContext("2d");
  const k = ex.scale;
  const e = ex.ellipse;
  ctx.drawImage(ex.img, 0, 0, canvas.width, canvas.height);
  ctx.lineWidth = 2;
  ctx.strokeStyle = ex.edited ? "#ffb000" : "#00e060";
  ctx.beginPath();
  ctx.ellipse(e.center_x_px * k, e.center_y_px * k, e.semi_axes_a_px * k, e.semi_axes_b_px * k, e.angle_rad, 0, 2 * Math.PI);
  ctx.stroke();
  const h = handles(e);
  ctx.fillStyle = "#ffffff";
  ctx.strokeStyle = "#0b6e4f";
  for (const [name, [x, y]] of Object.entries(h)) {
    ctx.beginPath();
    if (name === "rotate") ctx.rect(x * k - HANDLE_PX, y * k - HANDLE_PX, 2 * HANDLE_PX, 2 * HANDLE_PX);
    else ctx.arc(x * k, y * k, name === "centre" ? HANDLE_PX + 2 : HANDLE_PX, 0, 2 * Math.PI);
    ctx.fill();
    ctx.stroke();
  }
}

function showEstimate() {
  const ex = state.exam;
  const a = Math.max(ex.ellipse.semi_axes_a_px, ex.ellipse.semi_axes_b_px);
  const b = Math.min(ex.ellipse.semi_axes_a_px, ex.ellipse.semi_axes_b_px);
  const mm = ex.pixelSize;
  if (mm) {
    $("hc").textContent = fmt(ramanujan(a, b) * mm, 1);
    $("bpd").textContent = fmt(2 * b * mm, 1);
    $("ofd").textContent = fmt(2 * a * mm, 1);
    $("ci").textContent = fmt((b / a) * 100, 1);
  }
  const px = `HC ${fmt(ramanujan(a, b), 0)} px`;
  $("edit-status").textContent = `edited (estimate, ${px}): press Accept to have the server recompute`;
}

function startEditor(row) {
  const e = row.editable_ellipse;
  $("editor-box").hidden = !(row.exam_id && e && state.images.image);
  if ($("editor-box").hidden) { state.exam = null; return; }
  const ex = {
    id: row.exam_id,
    original: { ...e },
    ellipse: { ...e },
    width: e.image_width_px,
    height: e.image_height_px,
    pixelSize: row.pixel_size_mm,
    edited: false,
    corrected: false,
    img: null,
    scale: 1,
  };
  state.exam = ex;
  const canvas = $("editor");
  ex.scale = Math.min(1, 900 / ex.width);
  canvas.width = Math.round(ex.width * ex.scale);
  canvas.height = Math.round(ex.height * ex.scale);
  const img = new Image();
  img.onload = () => { ex.img = img; drawEditor(); };
  img.src = state.images.image;
  $("accept").disabled = true;
  $("reset-ellipse").disabled = true;
  $("edit-status").textContent = "";
}

function pointerPosition(event) {
  const canvas = $("editor");
  const rect = canvas.getBoundingClientRect();
  const k = state.exam.scale;
  return [
    ((event.clientX - rect.left) * (canvas.width / rect.width)) / k,
    ((event.clientY - rect.top) * (canvas.height / rect.height)) / k,
  ];
}

function onPointerDown(event) {
  const ex = state.exam;
  if (!ex) return;
  const [x, y] = pointerPosition(event);
  let best = null;
  for (const [name, [hx, hy]] of Object.entries(handles(ex.ellipse))) {
    const d = Math.hypot(hx - x, hy - y) * ex.scale;
    if (d <= HANDLE_PX + 6 && (!best || d < best.d)) best = { name, d };
  }
  if (!best) return;
  ex.dragging = best.name;
  $("editor").setPointerCapture(event.pointerId);
  event.preventDefault();
}

function onPointerMove(event) {
  const ex = state.exam;
  if (!ex || !ex.dragging) return;
  const [x, y] = pointerPosition(event);
  const e = ex.ellipse;
  const c = Math.cos(e.angle_rad), s = Math.sin(e.angle_rad);
  const dx = x - e.center_x_px, dy = y - e.center_y_px;
  if (ex.dragging === "centre") {
    e.center_x_px = Math.min(Math.max(x, 0), ex.width - 1);
    e.center_y_px = Math.min(Math.max(y, 0), ex.height - 1);
  } else if (ex.dragging === "axisA") {
    e.semi_axes_a_px = Math.max(2, dx * c + dy * s);
  } else if (ex.dragging === "axisB") {
    e.semi_axes_b_px = Math.max(2, -dx * s + dy * c);
  } else if (ex.dragging === "rotate") {
    e.angle_rad = Math.atan2(-dy, -dx);
  }
  ex.edited = true;
  $("accept").disabled = false;
  $("reset-ellipse").disabled = false;
  drawEditor();
  showEstimate();
}

function onPointerUp(event) {
  if (state.exam) state.exam.dragging = null;
  if ($("editor").hasPointerCapture(event.pointerId)) $("editor").releasePointerCapture(event.pointerId);
}

function resetEllipse() {
  const ex = state.exam;
  if (!ex) return;
  ex.ellipse = { ...ex.original };
  ex.edited = false;
  $("accept").disabled = false;  // accepting the model's ellipse is a choice too
  drawEditor();
  showEstimate();
}

async function acceptEllipse() {
  const ex = state.exam;
  if (!ex) return;
  showError("");
  const e = ex.ellipse;
  const body = {
    exam_id: ex.id,
    center_x_px: e.center_x_px,
    center_y_px: e.center_y_px,
    semi_axes_a_px: e.semi_axes_a_px,
    semi_axes_b_px: e.semi_axes_b_px,
    angle_rad: e.angle_rad,
    images: true,
  };
  setBusy(true);
  try {
    const response = await fetch("/api/correct", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) { showError(await errorText(response)); return; }
    const row = await response.json();
    render(row);
    ex.corrected = true;
    ex.edited = false;
    $("accept").disabled = true;
    $("edit-status").textContent = "accepted: the values above are the server's";
    drawEditor();
  } catch (error) {
    showError(`the request failed: ${error.message}`);
  } finally {
    setBusy(false);
  }
}

function showCorrection(row) {
  const box = $("corrected");
  box.hidden = !row.corrected_by_user;
  if (!row.corrected_by_user) return;
  const a = row.automatic || {};
  $("automatic").textContent = `HC ${fmt(a.hc_mm, 1)} mm, BPD ${fmt(a.bpd_mm, 1)} mm, OFD ${fmt(a.ofd_mm, 1)} mm`;
}

document.addEventListener("DOMContentLoaded", () => {
  $("exam-form").addEventListener("submit", measure);
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("accept").addEventListener("click", acceptEllipse);
  $("reset-ellipse").addEventListener("click", resetEllipse);
  $("editor").addEventListener("pointerdown", onPointerDown);
  $("editor").addEventListener("pointermove", onPointerMove);
  $("editor").addEventListener("pointerup", onPointerUp);
  $("editor").addEventListener("pointercancel", onPointerUp);
  $("report").addEventListener("click", downloadReport);
  for (const button of document.querySelectorAll("button.view")) {
    button.addEventListener("click", () => renderView(button.dataset.view));
  }
  $("file").addEventListener("change", () => {
    state.lastForm = null;
    state.exam = null;
    $("report").disabled = true;
    $("editor-box").hidden = true;
  });
  loadInfo();
});
