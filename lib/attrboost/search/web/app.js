// attrboost search page: no framework, no external resources. Talks to /api/* (see attrboost/serve.py).
"use strict";
const $ = (id) => document.getElementById(id);
// ?seed=N fixes the catalogue sample shown (e.g. for a screenshot); otherwise a random one
const state = { info: null, last: null,
  seed: Number(new URLSearchParams(location.search).get("seed")) || Math.floor(Math.random() * 1e9) };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function getJSON(response) {
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    throw new Error(`${response.status}: ${detail || response.statusText}`);
  }
  return body;
}

function attrs(hit) {
  // the item's predicted attributes (from the index), if it keeps them
  const rows = Object.entries(hit.predicted || {}).map(([a, p]) =>
    el("div", { title: `${a}: ${p.value} (confidence ${p.confidence.toFixed(2)})` }, `${a}: ${p.value}`));
  return el("div", { class: "attrs" }, ...rows);
}

function card(hit, other) {
  const only = other && !other.has(hit.id);
  return el("div", { class: only ? "card only" : "card", "data-id": hit.id,
                     title: only ? `${hit.id}: not in the other column's top k` : hit.id },
    el("img", { src: hit.thumb, alt: hit.id, loading: "lazy" }),
    el("div", { class: "meta" }, el("span", {}, `#${hit.rank}`), el("b", {}, hit.score.toFixed(3))),
    el("div", { class: "id" }, hit.id), attrs(hit));
}

function filterParams() {
  // one filter=ATTRIBUTE:VALUE per chosen value (the API's repeatable parameter)
  const chosen = [...document.querySelectorAll("#filter-selects select")].filter((s) => s.value);
  return chosen.map((s) => `&filter=${encodeURIComponent(`${s.dataset.attribute}:${s.value}`)}`).join("");
}

function showFilters(info) {
  if (!info.filters) {
    $("filters").hidden = true;
    $("filters-note").hidden = false;
    $("filters-note").textContent = `No filters: ${info.filters_note}`;
    return;
  }
  const selects = Object.entries(info.filters).map(([a, values]) => {
    const s = el("select", { "data-attribute": a, name: a },
      el("option", { value: "" }, "any"), ...values.map((v) => el("option", { value: v }, v)));
    s.addEventListener("change", () => state.last && state.last());
    return el("label", {}, a, s);
  });
  $("filter-selects").replaceChildren(...selects);
  $("filters").hidden = selects.length === 0;
}

function render(result) {
  $("hint").hidden = true;
  const filtered = result.filter && result.filter.length ? ` (filter: ${result.filter.join("; ")})` : "";
  const boosted = new Set(result.boosted.map((h) => h.id));
  const raw = result.raw ? new Set(result.raw.map((h) => h.id)) : null;
  $("boosted").replaceChildren(...result.boosted.map((h) => card(h, raw)));
  if (raw) {
    $("raw").replaceChildren(...result.raw.map((h) => card(h, boosted)));
    const common = result.boosted.filter((h) => raw.has(h.id)).length;
    const note = `${common} of ${result.boosted.length} in both columns; outlined: only in this one`;
    $("boosted-note").textContent = note;
    $("raw-note").textContent = note;
  }
  if (filtered) {
    const shown = `${result.boosted.length} of ${result.k}${filtered}. `;
    $("boosted-note").textContent = shown + $("boosted-note").textContent;
  }
  const chips = Object.entries(result.predicted).map(([k, v]) =>
    el("span", { class: "chip" }, `${k}: `, el("b", {}, v)));
  $("predicted").replaceChildren(el("span", { class: "muted" }, "predicted:"), ...chips);
  $("predicted").hidden = chips.length === 0;
}

async function run(request, preview, caption, again) {
  showError("");
  $("results").classList.add("busy");
  $("query").hidden = false;
  $("query-img").src = preview;
  $("query-caption").textContent = caption;
  try {
    render(await getJSON(await request()));
    state.last = again;  // changing k re-runs the last query that worked
  } catch (e) {
    showError(e.message);
  } finally {
    $("results").classList.remove("busy");
  }
}

function k() { return $("k").value; }

function searchFile(file) {
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  run(() => fetch(`/api/search?k=${k()}${filterParams()}`, { method: "POST", body: form }),
      URL.createObjectURL(file), `${file.name} (${Math.round(file.size / 1024)} KB)`, () => searchFile(file));
}

function searchId(id, thumb) {
  run(() => fetch(`/api/search?id=${encodeURIComponent(id)}&k=${k()}${filterParams()}`), thumb, `catalogue item ${id}`,
      () => searchId(id, thumb));
}

async function loadCatalogue() {
  try {
    const out = await getJSON(await fetch(`/api/catalogue?limit=24&seed=${state.seed}`));
    $("catalogue").replaceChildren(...out.items.map((it) => {
      const b = el("button", { type: "button", class: "pick", "data-id": it.id, title: it.id },
        el("img", { src: it.thumb, alt: it.id, loading: "lazy" }));
      b.addEventListener("click", () => searchId(it.id, it.thumb));
      return b;
    }));
  } catch (e) { showError(e.message); }
}

async function init() {
  const kDefault = Number(document.body.dataset.k) || 10;
  for (const v of [...new Set([5, 10, 20, 50, kDefault])].sort((a, b) => a - b)) {
    $("k").append(el("option", v === kDefault ? { value: v, selected: "" } : { value: v }, String(v)));
  }
  $("k").addEventListener("change", () => state.last && state.last());
  $("upload").addEventListener("change", (e) => searchFile(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    searchFile(e.dataTransfer.files[0]);
  });
  $("shuffle").addEventListener("click", () => { state.seed = Math.floor(Math.random() * 1e9); loadCatalogue(); });
  try {
    const info = state.info = await getJSON(await fetch("/api/info"));
    const val = info.validation || {};
    const map = val["val_map@r"] !== undefined ? `, validation MAP@R ${Number(val["val_map@r"]).toFixed(1)}` : "";
    const on = info.attributes.length ? ` on ${info.attributes.join(", ")}` : "";
    $("model").textContent = `${info.backbone} + ${info.objective} head${on}${map}; ` +
      `${info.index.n} indexed items (${info.index.kind})` +
      (info.raw_index ? `; raw: ${info.raw_index.n} items` : "; no raw index (serve --raw-index)");
    showFilters(info);
    if (!info.raw_index) {
      $("raw-col").hidden = true;
      $("results").classList.add("single");
    }
  } catch (e) { showError(e.message); }
  loadCatalogue();
}

document.addEventListener("DOMContentLoaded", init);
