// The lookalike search page: image (drop, paste, choose), text (CLIP models) or item queries,
// a grid of results with scores, labels and the "no match" marker. No framework, no build step.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { info: null, queryUrl: null };

function setStatus(message, isError = false) {
  const status = $("#status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function options() {
  const max = state.info ? state.info.max_k : 100;
  const k = Math.min(Math.max(parseInt($("#k-input").value, 10) || 10, 1), max);
  const label = $("#label-select").value;
  return { k, label: label || null };
}

async function call(url, init) {
  const response = await fetch(url, init);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.error || `${response.status} ${response.statusText}`);
  }
  return body;
}

function showQuery(imageUrl, caption) {
  if (state.queryUrl) URL.revokeObjectURL(state.queryUrl);
  state.queryUrl = imageUrl && imageUrl.startsWith("blob:") ? imageUrl : null;
  const image = $("#query-image");
  image.hidden = !imageUrl;
  if (imageUrl) image.src = imageUrl; else image.removeAttribute("src");
  $("#query-caption").textContent = caption;
  $("#query-preview").hidden = false;
}

function renderHits(response) {
  const grid = $("#results");
  grid.replaceChildren();
  const hits = response.results.length ? response.results[0].hits : [];
  for (const hit of hits) {
    if (hit.no_match) {
      const marker = document.createElement("div");
      marker.className = "no-match";
      marker.dataset.rank = hit.rank;
      marker.textContent = `no match (rank ${hit.rank})`;
      grid.append(marker);
      continue;
    }
    const card = document.createElement("button");
    card.type = "button";
    card.className = "hit";
    card.dataset.id = hit.id;
    card.dataset.rank = hit.rank;
    card.title = `search by ${hit.id}`;
    const thumb = document.createElement("img");
    thumb.className = "thumb";
    thumb.loading = "lazy";
    thumb.alt = hit.label || hit.id;
    if (hit.image_url) thumb.src = hit.image_url;
    const meta = document.createElement("span");
    meta.className = "meta";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = `${hit.rank}. ${hit.label ?? "(no label)"}`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `score ${hit.score.toFixed(3)}`;
    const id = document.createElement("span");
    id.className = "id";
    id.textContent = hit.id;
    meta.append(label, score, id);
    card.append(thumb, meta);
    card.addEventListener("click", () => searchByItem(hit.id, hit.image_url));
    grid.append(card);
  }
  const found = hits.filter((hit) => !hit.no_match).length;
  const threshold = response.threshold === null ? "" : `, threshold ${response.threshold}`;
  setStatus(`${found} results (${response.metric}${threshold})`);
}

async function run(search) {
  setStatus("searching…");
  try {
    renderHits(await search());
  } catch (error) {
    $("#results").replaceChildren();
    setStatus(error.message, true);
  }
}

function searchByImage(file) {
  if (!file) return;
  if (state.info && !state.info.image_search) {
    setStatus("this server has no model: it searches by item or vector only", true);
    return;
  }
  showQuery(URL.createObjectURL(file), file.name || "pasted image");
  const { k, label } = options();
  const form = new FormData();
  form.append("images", file, file.name || "pasted.png");
  form.append("k", String(k));
  if (label) form.append("label", label);
  run(() => call("/api/search/image", { method: "POST", body: form }));
}

function searchByText(text) {
  showQuery(null, `“${text}”`);
  const { k, label } = options();
  run(() => call("/api/search/text", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text, k, label }),
  }));
}

function searchByItem(id, imageUrl) {
  showQuery(imageUrl, `similar to ${id}`);
  const { k, label } = options();
  window.scrollTo({ top: 0, behavior: "smooth" });
  run(() => call("/api/search/item", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ id, k, label }),
  }));
}

function firstImage(items) {
  for (const item of items || []) {
    if (item.kind === "file" && item.type.startsWith("image/")) return item.getAsFile();
  }
  return null;
}

function wire() {
  const zone = $("#drop-zone");
  $("#file-input").addEventListener("change", (event) => {
    searchByImage(event.target.files[0]);
    event.target.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    document.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    document.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) searchByImage(file);
  });
  document.addEventListener("paste", (event) => {
    const file = firstImage(event.clipboardData && event.clipboardData.items);
    if (file) {
      event.preventDefault();
      searchByImage(file);
    }
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      $("#file-input").click();
    }
  });
  $("#text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("#text-input").value.trim();
    if (text) searchByText(text);
  });
}

async function load() {
  wire();
  try {
    state.info = await call("/api/info");
  } catch (error) {
    setStatus(`cannot read the catalogue: ${error.message}`, true);
    return;
  }
  const info = state.info;
  $("#catalogue").textContent =
    `${info.items} items · ${info.model || "no model"} · ${info.metric}`;
  $("#k-input").max = String(info.max_k);
  $("#k-input").value = String(Math.min(12, info.max_k));
  const select = $("#label-select");
  for (const name of info.labels) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    select.append(option);
  }
  $("#text-form").hidden = !info.text_search;
  if (!info.image_search) {
    $("#drop-zone .drop-title").textContent = "This server has no model";
    $("#drop-zone .drop-hint").textContent = "click a result of an item search, or use the API";
  }
  document.body.dataset.ready = "true";
  setStatus(info.text_search ? "drop, paste or choose an image, or type a description"
    : "drop, paste or choose an image");
}

load();
