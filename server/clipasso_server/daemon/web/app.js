// The CLIPasso daemon's live page: every job (or one, on /jobs/{id}), its progress and the best
// strokes of every level so far, drawn over a faint copy of the photo. Plain JavaScript, no
// libraries. It polls the /v1 API once a second on the daemon's own origin; with a token the
// daemon refuses every /v1 call until the token is given, which the page then keeps in
// sessionStorage and sends as a Bearer header (never in an address).
"use strict";

const API = "/v1";
const POLL_MS = 1000;
const TOKEN_KEY = "clipasso-token";
const SVG_NS = "http://www.w3.org/2000/svg";
const FINAL = new Set(["done", "failed", "cancelled", "interrupted"]);
// on the list, finished jobs show their final strokes for the newest few only
const FINISHED_PREVIEWS = 6;

const singleId = (location.pathname.match(/^\/jobs\/([0-9a-f]{32})\/?$/) || [])[1] || null;
const cards = new Map(); // job id -> card state
let waitingForToken = false;
let pollTimer = null;

class AuthNeeded extends Error {}

const $ = (id) => document.getElementById(id);

// --- the API ----------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.set("Authorization", "Bearer " + token);
  // the page watches jobs; its reads must not keep an abandoned job alive
  headers.set("X-Clipasso-Viewer", "1");
  const response = await fetch(API + path, {
    ...options, headers, cache: "no-store", credentials: "omit",
  });
  if (response.status === 401) {
    askForToken(token ? "That token was refused." : "");
    throw new AuthNeeded();
  }
  return response;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.message) return body.message;
  } catch (_) { /* not JSON */ }
  return `the daemon answered ${response.status}`;
}

// --- the token --------------------------------------------------------------------------

function askForToken(message) {
  waitingForToken = true;
  $("token-section").hidden = false;
  $("token-error").textContent = message;
  if (document.activeElement !== $("token")) $("token").focus();
}

async function useToken(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    const response = await api("/health");
    if (!response.ok) throw new Error(await errorMessage(response));
  } catch (error) {
    if (!(error instanceof AuthNeeded)) $("token-error").textContent = String(error.message);
    sessionStorage.removeItem(TOKEN_KEY);
    return;
  }
  waitingForToken = false;
  $("token").value = "";
  $("token-section").hidden = true;
  poll();
}

// --- polling ----------------------------------------------------------------------------

async function poll() {
  clearTimeout(pollTimer);
  try {
    await refresh();
    $("connection").textContent = "";
  } catch (error) {
    if (!(error instanceof AuthNeeded)) {
      $("connection").textContent = "Cannot reach the daemon; retrying…";
    }
  }
  if (!waitingForToken) pollTimer = setTimeout(poll, POLL_MS);
}

async function refresh() {
  let statuses;
  if (singleId) {
    const response = await api(`/jobs/${singleId}`);
    if (response.status === 404) {
      $("no-jobs").textContent = "There is no such job (it may have been deleted).";
      $("no-jobs").hidden = false;
      return;
    }
    if (!response.ok) throw new Error(await errorMessage(response));
    statuses = [await response.json()];
  } else {
    const response = await api("/jobs");
    if (!response.ok) throw new Error(await errorMessage(response));
    const body = await response.json();
    statuses = Array.isArray(body) ? body : body.jobs || [];
  }
  showJobs(statuses);
  await Promise.all(statuses.map((status, index) => updatePreviews(status, index)));
}

// --- job cards --------------------------------------------------------------------------

function showJobs(statuses) {
  const list = $("jobs");
  const seen = new Set();
  let previous = null;
  for (const status of statuses) {
    seen.add(status.id);
    let card = cards.get(status.id);
    if (!card) {
      card = newCard(status);
      cards.set(status.id, card);
    }
    updateCard(card, status);
    // keep the daemon's order (newest first) without moving cards that are in place,
    // so focus and hover stay where they are
    const wanted = previous ? previous.nextSibling : list.firstChild;
    if (wanted !== card.el) list.insertBefore(card.el, wanted);
    previous = card.el;
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.el.remove();
      forget(card);
      cards.delete(id);
    }
  }
  $("no-jobs").hidden = statuses.length > 0 || singleId !== null;
}

function newCard(status) {
  const el = $("job-template").content.firstElementChild.cloneNode(true);
  el.dataset.id = status.id;
  const link = el.querySelector(".link");
  link.href = `/jobs/${status.id}`;
  const card = {
    id: status.id, el, status, thumbUrl: null, thumbAsked: false, levels: new Map(),
    previewStep: -1, polledStep: -1, finalLoaded: false, resultBody: null,
  };
  el.querySelector(".cancel").addEventListener("click", () => cancel(card));
  el.querySelector(".download").addEventListener("click", () => download(card));
  el.querySelector(".previews").setAttribute("aria-label", "Best strokes so far, per level");
  loadThumbnail(card);
  return card;
}

function forget(card) {
  if (card.thumbUrl) URL.revokeObjectURL(card.thumbUrl);
}

function jobName(status) {
  return status.name || `Job ${status.id.slice(0, 8)}`;
}

function updateCard(card, status) {
  card.status = status;
  const el = card.el;
  el.dataset.state = status.state;
  el.querySelector(".link").textContent = jobName(status);
  const bar = el.querySelector(".bar");
  const total = Math.max(1, status.total || 1);
  const step = stepsDone(status, total);
  bar.max = total;
  bar.value = step;
  bar.setAttribute("aria-label", `Progress of ${jobName(status)}`);
  bar.setAttribute("aria-valuetext", `step ${step} of ${total}`);
  el.querySelector(".state").textContent = stateText(status, step, total);
  el.querySelector(".numbers").textContent = numbersText(status, step, total);
  // what the engine's schedule reduced and why ("1 seed instead of 3 … to fit 10 min")
  const notes = Array.isArray(status.schedule_notes) ? status.schedule_notes : [];
  const schedule = el.querySelector(".schedule");
  schedule.textContent = notes.length ? `Reduced: ${notes.join("; ")}` : "";
  schedule.hidden = notes.length === 0;
  const error = status.error && status.state !== "interrupted" ? status.error.message : "";
  el.querySelector(".error").textContent = error || "";
  const cancel = el.querySelector(".cancel");
  const active = status.state === "queued" || status.state === "running";
  cancel.hidden = !active;
  if (status.cancelling) {
    cancel.disabled = true;
    cancel.textContent = "Cancelling…";
  }
  cancel.setAttribute("aria-label", `Cancel ${jobName(status)}`);
  const download = el.querySelector(".download");
  download.hidden = status.state !== "done";
  download.setAttribute("aria-label", `Download the layered SVG of ${jobName(status)}`);
}

// A done job ran all its steps unless it says it stopped early (its time budget ran out,
// or its strokes stopped improving): then the steps it did run, not a full bar.
function stepsDone(status, total) {
  const stoppedEarly = status.stop_reason && status.stop_reason !== "iterations";
  if (status.state === "done" && !stoppedEarly) return total;
  return Math.min(status.step || 0, total);
}

function hasBudget(status) {
  return typeof status.time_budget_s === "number" && status.time_budget_s > 0;
}

function stateText(status, step, total) {
  switch (status.state) {
    case "queued":
      return status.queue_position > 0
        ? `Queued (${status.queue_position} ahead)` : "Queued";
    case "running": {
      if (status.cancelling) return "Cancelling…";
      // before its first step a job loads the models and places its first strokes
      if (!status.step) return "Starting: loading the models and preparing the photo…";
      // announced by screen readers: coarse steps only, not every second
      const tenth = Math.floor((10 * step) / total) * 10;
      return `Running, ${tenth} % of the steps done`;
    }
    case "done":
      if (status.stop_reason === "budget") {
        const budget = hasBudget(status) ? ` (${duration(status.time_budget_s)})` : "";
        return `Stopped by its time budget${budget} after ${step} of ${total} steps`;
      }
      if (status.stop_reason === "plateau") {
        return `Done early: the strokes stopped improving after ${step} of ${total} steps`;
      }
      return "Done";
    case "failed": return "Failed";
    case "cancelled": return "Cancelled";
    case "interrupted": return "Interrupted (the daemon stopped)";
    default: return status.state;
  }
}

function numbersText(status, step, total) {
  const parts = [`step ${step} of ${total}`];
  const rate = stepsPerSecond(status);
  if (status.state === "running") {
    if (rate) parts.push(`${rate < 10 ? rate.toFixed(2) : rate.toFixed(1)} steps/s`);
    if (typeof status.eta_s === "number") parts.push(`${duration(status.eta_s)} left`);
  } else if (status.state === "queued" && typeof status.eta_s === "number") {
    parts.push(`done in about ${duration(status.eta_s)}`);
  } else if (FINAL.has(status.state) && status.elapsed_s) {
    parts.push(`took ${duration(status.elapsed_s)}`);
  }
  if (hasBudget(status) && (status.state === "queued" || status.state === "running")) {
    parts.push(`time budget ${duration(status.time_budget_s)}`);
  }
  return parts.join(" · ");
}

function stepsPerSecond(status) {
  if (typeof status.steps_per_s === "number" && status.steps_per_s > 0) return status.steps_per_s;
  if (typeof status.step_time_s === "number" && status.step_time_s > 0) {
    return 1 / status.step_time_s;
  }
  return null;
}

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

async function loadThumbnail(card) {
  if (card.thumbAsked) return;
  card.thumbAsked = true;
  try {
    const response = await api(`/jobs/${card.id}/thumbnail`);
    if (!response.ok) {
      // written just after the job is queued: a page that polled in between asks again
      if (response.status === 404 && card.status.state === "queued") card.thumbAsked = false;
      return;
    }
    card.thumbUrl = URL.createObjectURL(await response.blob());
  } catch (error) {
    card.thumbAsked = false; // try again on the next poll
    return;
  }
  const img = card.el.querySelector(".thumb");
  img.src = card.thumbUrl;
  img.alt = `Photo of ${jobName(card.status)}`;
  img.hidden = false;
  for (const level of card.levels.values()) level.photo.setAttribute("href", card.thumbUrl);
}

// --- previews ---------------------------------------------------------------------------

async function updatePreviews(status, index) {
  const card = cards.get(status.id);
  if (!card) return;
  if (!card.thumbUrl && !card.thumbAsked) loadThumbnail(card);
  if (status.state === "running") {
    // a new snapshot comes with a new step only: no step, nothing to fetch
    if (status.step === card.polledStep) return;
    const response = await api(`/jobs/${status.id}/result?partial=1`);
    if (response.status === 409 || !response.ok) return; // no snapshot yet
    const result = await response.json();
    card.polledStep = status.step;
    const step = typeof result.step === "number" ? result.step : status.step;
    if (step !== card.previewStep) {
      card.previewStep = step;
      drawLevels(card, result);
    }
    return;
  }
  const wantFinal = singleId !== null || index < FINISHED_PREVIEWS;
  if (!FINAL.has(status.state) || card.finalLoaded || !wantFinal || status.state === "failed") {
    return;
  }
  card.finalLoaded = true;
  const path = status.state === "done" ? "/result" : "/result?partial=1";
  const response = await api(`/jobs/${status.id}${path}`);
  if (!response.ok) return;
  const result = await response.json();
  if (status.state === "done") card.resultBody = result;
  drawLevels(card, result);
}

function drawLevels(card, result) {
  const container = card.el.querySelector(".previews");
  // the step these strokes are from (bench/web_viewer.py times the previews by it)
  container.dataset.step = String(typeof result.step === "number" ? result.step : "");
  const width = result.image.width;
  const height = result.image.height;
  for (const level of result.levels) {
    let view = card.levels.get(level.strokes);
    if (!view) {
      view = newLevelView(card, level.strokes, width, height);
      card.levels.set(level.strokes, view);
      const after = [...card.levels.keys()].sort((a, b) => a - b);
      const next = after.find((n) => n > level.strokes);
      container.insertBefore(view.figure, next ? card.levels.get(next).figure : null);
    }
    const paths = level.paths.map((stroke) => {
      const p = stroke.points;
      const path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("d", `M${p[0][0]} ${p[0][1]}C${p[1][0]} ${p[1][1]} ${p[2][0]} ` +
        `${p[2][1]} ${p[3][0]} ${p[3][1]}`);
      path.setAttribute("stroke", stroke.color);
      path.setAttribute("stroke-width", stroke.width);
      return path;
    });
    view.strokes.replaceChildren(...paths);
    const loss = typeof level.loss === "number" ? `, loss ${level.loss.toFixed(3)}` : "";
    view.caption.textContent = `${level.strokes} strokes${loss}`;
  }
}

function newLevelView(card, strokes, width, height) {
  const figure = document.createElement("figure");
  figure.className = "preview";
  figure.dataset.strokes = String(strokes);
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${strokes}-stroke sketch of ${jobName(card.status)}`);
  const photo = document.createElementNS(SVG_NS, "image");
  photo.setAttribute("width", width);
  photo.setAttribute("height", height);
  photo.setAttribute("preserveAspectRatio", "none");
  photo.setAttribute("opacity", "0.25");
  if (card.thumbUrl) photo.setAttribute("href", card.thumbUrl);
  const group = document.createElementNS(SVG_NS, "g");
  group.setAttribute("class", "strokes");
  group.setAttribute("fill", "none");
  group.setAttribute("stroke-linecap", "round");
  svg.append(photo, group);
  const caption = document.createElement("figcaption");
  figure.append(svg, caption);
  return { figure, photo, strokes: group, caption };
}

// --- actions ----------------------------------------------------------------------------

async function cancel(card) {
  const button = card.el.querySelector(".cancel");
  button.disabled = true;
  button.textContent = "Cancelling…";
  try {
    const response = await api(`/jobs/${card.id}`, { method: "DELETE" });
    if (!response.ok) throw new Error(await errorMessage(response));
    const status = await response.json();
    updateCard(card, status);
  } catch (error) {
    if (!(error instanceof AuthNeeded)) {
      card.el.querySelector(".error").textContent = `Cancel failed: ${error.message}`;
    }
    button.disabled = false;
    button.textContent = "Cancel";
  }
}

async function download(card) {
  const button = card.el.querySelector(".download");
  try {
    if (!card.resultBody) {
      const response = await api(`/jobs/${card.id}/result`);
      if (!response.ok) throw new Error(await errorMessage(response));
      card.resultBody = await response.json();
    }
  } catch (error) {
    if (!(error instanceof AuthNeeded)) {
      card.el.querySelector(".error").textContent = `Download failed: ${error.message}`;
    }
    return;
  }
  const blob = new Blob([card.resultBody.svg], { type: "image/svg+xml" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = svgFileName(card.status);
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  button.focus();
}

function svgFileName(status) {
  const base = (status.name || status.id).replace(/\.[A-Za-z0-9]+$/, "");
  return `${base.replace(/[^\w.-]+/g, "_") || "sketch"}-sketch.svg`;
}

// --- the new-job form -------------------------------------------------------------------

function numberField(id, parse) {
  const text = $(id).value.trim();
  return text === "" ? null : parse(text);
}

function formSettings() {
  const settings = {
    levels: $("levels").value.trim(),
    iterations: numberField("iterations", (t) => parseInt(t, 10)),
    seeds: numberField("seeds", (t) => parseInt(t, 10)),
    schedule: $("schedule").value,
    precision: $("precision").value,
    width: numberField("width", parseFloat),
    color: $("color").value,
    remove_background: $("remove-background").checked,
    loss_model: $("loss-model").value.trim(),
    saliency_model: $("saliency-model").value.trim(),
    seed: numberField("seed", (t) => parseInt(t, 10)),
    time_budget_s: numberField("time-budget", parseFloat),
  };
  for (const key of Object.keys(settings)) {
    if (settings[key] === null || settings[key] === "") {
      if (key !== "time_budget_s") delete settings[key];
    }
  }
  return settings;
}

function showChosen(file) {
  const img = $("chosen");
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(file);
  img.hidden = false;
}

// The photo's size as the daemon sees it (turned by its EXIF orientation, as browsers show it):
// start strokes are in its pixels.
async function photoSize(file) {
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    img.src = url;
    await img.decode();
    return [img.naturalWidth, img.naturalHeight];
  } finally {
    URL.revokeObjectURL(url);
  }
}

// The start strokes of an SVG drawn over the photo, read by the daemon's converter (the same
// as `clipasso sketch --start-svg`): [[[x, y] x 4], ...] in the photo's pixels.
async function startStrokes(svgFile, photo) {
  const [width, height] = await photoSize(photo);
  const response = await api("/start-strokes", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ svg: await svgFile.text(), width, height }),
  });
  if (!response.ok) throw new Error(`${svgFile.name}: ${await errorMessage(response)}`);
  return (await response.json()).strokes;
}

async function submitJob(event) {
  event.preventDefault();
  const file = $("image").files[0];
  const status = $("form-status");
  if (!file) {
    status.textContent = "Choose a photo first.";
    $("image").focus();
    return;
  }
  const svgFile = $("start-svg").files[0];
  if ($("keep-start").checked && !svgFile) {
    status.textContent = "Choose the SVG of the strokes to keep first.";
    $("start-svg").focus();
    return;
  }
  $("submit").disabled = true;
  status.textContent = "Sending…";
  try {
    const settings = formSettings();
    if (svgFile) {
      settings.start_strokes = await startStrokes(svgFile, file);
      settings.keep_start_strokes = $("keep-start").checked;
    }
    const form = new FormData();
    form.append("image", file, file.name);
    form.append("settings", JSON.stringify(settings));
    form.append("name", file.name.slice(0, 256));
    // the page is not a client that waits on the job: closing it must not cancel the job
    form.append("detached", "true");
    const response = await api("/jobs", { method: "POST", body: form });
    if (!response.ok) throw new Error(await errorMessage(response));
    const body = await response.json();
    status.textContent = body.cached
      ? `Already sketched: ${file.name} (from the cache).`
      : `Queued: ${file.name}.`;
    poll();
  } catch (error) {
    status.textContent = error instanceof AuthNeeded
      ? "Give the token first." : `Not queued: ${error.message}`;
  } finally {
    $("submit").disabled = false;
  }
}

function setUpDrop() {
  const zone = $("drop");
  // a photo dropped anywhere else must not make the browser leave the page for the file
  for (const name of ["dragover", "drop"]) {
    window.addEventListener(name, (event) => event.preventDefault());
  }
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    $("image").files = files;
    showChosen(files[0]);
    $("form-status").textContent = `Chosen: ${files[0].name}`;
  });
  $("image").addEventListener("change", () => {
    if ($("image").files[0]) showChosen($("image").files[0]);
  });
}

function start() {
  $("token-form").addEventListener("submit", useToken);
  $("job-form").addEventListener("submit", submitJob);
  setUpDrop();
  if (singleId) {
    document.body.classList.add("single");
    $("new-job").hidden = true;
    $("back").hidden = false;
    $("jobs-title").textContent = "Job";
  }
  poll();
}

start();
