// fetometry page: one form -> POST /api/measure (JSON) or /api/report (PDF).
// Plain JavaScript, no framework, no CDN. Text from the server is only ever set with
// textContent (never innerHTML), so a file name or a note cannot inject markup.
"use strict";

const FIELDS = ["pixel_size_mm", "ga_weeks", "ga_source", "lmp", "exam_date", "explain", "model", "pregnancy_id"];
const state = { info: null, images: {}, lastForm: null };

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
    render(await response.json());
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
  let form;
  try { form = buildForm(); } catch (error) { showError(error.message); return; }
  setBusy(true);
  try {
    const response = await fetch("/api/report", { method: "POST", body: form });
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
    state.info = await response.json();
  } catch (error) {
    showError(`cannot reach the fetometry server: ${error.message}`);
    return;
  }
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

document.addEventListener("DOMContentLoaded", () => {
  $("exam-form").addEventListener("submit", measure);
  $("report").addEventListener("click", downloadReport);
  for (const button of document.querySelectorAll("button.view")) {
    button.addEventListener("click", () => renderView(button.dataset.view));
  }
  $("file").addEventListener("change", () => { state.lastForm = null; $("report").disabled = true; });
  loadInfo();
});
