// The image2sdr page: plain JS over the /v1 JSON endpoints (canonical proto JSON), no build step.
// Every value from the server reaches the DOM through textContent or a data: URL, never innerHTML.
"use strict";

const TOKEN_KEY = "image2sdr.token";
const PAGE_SIZE = 12;
const MATCHES = 12;
const TERMS = 10;
const MAP_POLL_MS = 400;
// Canvas colours (RGB): background, the query's bits, bits shared with the chosen match, the match's other bits.
const COLOURS = { empty: [255, 255, 255], query: [31, 41, 55], shared: [234, 88, 12], other: [147, 197, 253] };

const $ = (id) => document.getElementById(id);
const count = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

const state = {
  file: null,          // the chosen image (File)
  query: null,         // {semantic: Sdr|null, visual: Sdr|null, label: string}: what the canvas and matches show
  generation: 0,       // bumped by every new query, so a late answer for an old one is dropped
  chosen: null,        // id of the match whose shared bits are highlighted
  items: new Map(),    // id -> Promise<Item> (GET /v1/items/{id}, with thumbnail and SDRs)
  pageTokens: [""],    // page tokens of the collection pages seen so far; the last is the current page
  nextToken: "",
};

// ---- HTTP -------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** One request to the API; a 401 asks for a bearer token (kept for this tab) and tries again. */
async function api(method, path, body) {
  for (;;) {
    // X-Requested-With: a header no foreign page can add without a CORS preflight, so the
    // server knows a state-changing call is the page's own even behind a proxy that renames it.
    const headers = { "X-Requested-With": "image2sdr-page" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    let payload = body;
    if (body !== undefined && !(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(path, { method, headers, body: payload });
    if (response.status === 401 && askToken(token)) continue;
    if (!response.ok) throw new ApiError(await errorMessage(response), response.status);
    return response.json();
  }
}

/** Prompt for a token; false when the user gives none (or repeats the one just refused). */
function askToken(refused) {
  const token = window.prompt(refused ? "That token was refused. Bearer token:" : "This server needs a bearer token:");
  if (!token || token === refused) return false;
  sessionStorage.setItem(TOKEN_KEY, token.trim());
  return true;
}

/** The google.rpc.Status message of an error answer, or the HTTP status when the body is not one. */
async function errorMessage(response) {
  const text = await response.text();
  try {
    const status = JSON.parse(text);
    if (status && status.message) return status.message;
  } catch (_) {
    // Not JSON (a proxy's page): fall through to the status line.
  }
  return `${response.status} ${response.statusText}`.trim();
}

const itemPath = (id) => `/v1/items/${encodeURIComponent(id)}`;

/** An item with its thumbnail and SDRs, fetched once per id until it is added or removed again. */
function getItem(id) {
  if (!state.items.has(id)) {
    const pending = api("GET", itemPath(id));
    pending.catch(() => state.items.delete(id));
    state.items.set(id, pending);
  }
  return state.items.get(id);
}

// ---- feedback ---------------------------------------------------------------------------------

function showError(error) {
  const box = $("error");
  box.textContent = error instanceof ApiError ? `${error.message} (HTTP ${error.status})` : String(error.message || error);
  box.hidden = false;
}

function setStatus(text) {
  $("status").textContent = text;
  if (text) $("error").hidden = true;
}

/** Run an action from a UI event, showing its failure instead of losing it in the console. */
function guarded(action) {
  return async (event) => {
    if (event instanceof Event && event.type === "submit") event.preventDefault();
    try {
      await action(event);
    } catch (error) {
      setStatus("");
      showError(error);
    }
  };
}

// ---- drawing ----------------------------------------------------------------------------------

function geometry(sdr) {
  const dims = sdr && sdr.dimensions && sdr.dimensions.length === 2 ? sdr.dimensions : [128, 128];
  return { rows: dims[0], columns: dims[1] };
}

/** Draw ``sdr`` one pixel per bit (row-major); with ``match``, colour the bits the two share. */
function drawSdr(sdr, match) {
  const canvas = $("sdr-canvas");
  const { rows, columns } = geometry(sdr);
  canvas.width = columns;
  canvas.height = rows;
  const context = canvas.getContext("2d");
  const image = context.createImageData(columns, rows);
  const paint = (bit, rgb) => image.data.set([...rgb, 255], bit * 4);
  for (let bit = 0; bit < rows * columns; bit++) paint(bit, COLOURS.empty);
  const mine = new Set((sdr && sdr.active) || []);
  for (const bit of (match && match.active) || []) paint(bit, mine.has(bit) ? COLOURS.shared : COLOURS.other);
  const theirs = new Set((match && match.active) || []);
  for (const bit of mine) if (!theirs.has(bit)) paint(bit, COLOURS.query);
  context.putImageData(image, 0, 0);
  canvas.dataset.active = String(mine.size);
  canvas.dataset.shared = String(match ? [...mine].filter((bit) => theirs.has(bit)).length : 0);
}

const thumbnailUrl = (b64) => `data:${b64.startsWith("/9j/") ? "image/jpeg" : "image/webp"};base64,${b64}`;

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

/** Fill an <img> with the item's thumbnail when it has one (it may be gone, or stored without). */
async function fillThumbnail(img, id, thumbnail) {
  try {
    const b64 = thumbnail || (await getItem(id)).thumbnail;
    if (b64) img.src = thumbnailUrl(b64);
    else img.replaceWith(element("span", { class: "thumb none" }, "no thumbnail"));
  } catch (_) {
    img.replaceWith(element("span", { class: "thumb none" }, "unavailable"));
  }
}

function thumbnailImg(id) {
  return element("img", { class: "thumb", alt: `Thumbnail of ${id}`, width: "96", height: "96" });
}

function renderBars(list, rows) {
  list.replaceChildren(
    ...rows.map(({ name, value, max, label, testid, dim, title }) => {
      const li = element("li", { "data-testid": testid, class: dim ? "unused" : "" });
      if (title) li.title = title;
      li.append(element("span", { class: "name" }, name), element("meter", { min: "0", max: String(max), value: String(value) }));
      li.append(element("span", { class: "value" }, label));
      return li;
    }),
  );
}

function renderConcepts(concepts) {
  renderBars(
    $("concepts"),
    (concepts || []).map((c) => ({
      name: c.name,
      value: c.confidence || 0,
      max: 1,
      label: `${Math.round((c.confidence || 0) * 100)} %`,
      testid: "concept",
      dim: !c.used,
      title: c.used ? "" : `not merged: ${c.skipReason || "skipped"}`,
    })),
  );
}

// ---- the query: an image or words ---------------------------------------------------------------

function currentSpace() {
  return document.querySelector('input[name="space"]:checked').value;
}

function querySdr() {
  return currentSpace() === "SPACE_VISUAL" ? state.query.visual : state.query.semantic;
}

/** The id an image proposes for itself: its file name without the extension. */
function idFor(file) {
  return (file.name || "image").replace(/\.[^.]*$/, "");
}

async function encodeFile(file, id) {
  const form = new FormData();
  form.append("image", file, file.name || "image");
  if (id) form.append("id", id);
  return api("POST", "/v1/encode", form);
}

const chooseFile = guarded(async (file) => {
  if (!file) return;
  state.file = file;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  // Each image proposes its own id: keeping the previous one would store this image over that item.
  $("add-id").value = idFor(file);
  setStatus(`Encoding ${file.name}…`);
  const encoded = await encodeFile(file);
  renderConcepts(encoded.concepts);
  $("add-button").disabled = false;
  setStatus(`Encoded ${file.name}; searching…`);
  await setQuery({ semantic: encoded.sdr, visual: encoded.visual || null, label: file.name });
  setStatus(`Encoded ${file.name} in ${Math.round((encoded.timings && encoded.timings.totalMs) || 0)} ms`);
});

/** Show a new query: its SDR, its decoded terms and its nearest stored items. */
function setQuery(query) {
  state.query = query;
  state.chosen = null;
  const visual = $("space").querySelector('[value="SPACE_VISUAL"]');
  visual.disabled = !query.visual;
  if (visual.disabled && visual.checked) $("space").querySelector('[value="SPACE_SEMANTIC"]').checked = true;
  return refreshQuery();
}

async function refreshQuery() {
  const generation = ++state.generation;
  const sdr = querySdr();
  const space = currentSpace() === "SPACE_VISUAL" ? "visual" : "semantic";
  drawSdr(sdr, null);
  $("sdr-caption").textContent = `${state.query.label}: ${(sdr.active || []).length} active bits (${space})`;
  const [terms, similar] = await Promise.all([
    api("POST", "/v1/terms", { sdr: state.query.semantic, k: TERMS }),
    api("POST", "/v1/similar", { sdr, k: MATCHES, space: currentSpace() }),
  ]);
  if (generation !== state.generation) return;
  renderTerms(terms.terms);
  renderMatches(similar.matches);
}

function renderTerms(terms) {
  const list = terms || [];
  const most = Math.max(1, ...list.map((t) => t.overlap || 0));
  renderBars(
    $("terms"),
    list.map((t) => ({ name: t.term, value: t.overlap || 0, max: most, label: `${t.overlap || 0} bits`, testid: "term" })),
  );
}

const search = guarded(async () => {
  const text = $("search-text").value.trim();
  if (!text) return;
  setStatus(`Searching for “${text}”…`);
  const generation = ++state.generation;
  const found = await api("POST", "/v1/similar", { text, k: MATCHES });
  if (generation !== state.generation) return;
  state.query = { semantic: found.query, visual: null, label: `“${text}”` };
  state.chosen = null;
  $("space").querySelector('[value="SPACE_SEMANTIC"]').checked = true;
  $("space").querySelector('[value="SPACE_VISUAL"]').disabled = true;
  drawSdr(found.query, null);
  $("sdr-caption").textContent = `${state.query.label}: ${((found.query && found.query.active) || []).length} active bits`;
  renderMatches(found.matches);
  const terms = await api("POST", "/v1/terms", { sdr: found.query, k: TERMS });
  if (generation === state.generation) renderTerms(terms.terms);
  setStatus(`${count((found.matches || []).length, "match", "matches")} for “${text}”`);
});

// ---- matches ----------------------------------------------------------------------------------

function renderMatches(matches) {
  const list = $("matches");
  list.replaceChildren(...(matches || []).map(matchCard));
  if (!list.children.length) list.append(element("li", { class: "muted", "data-testid": "no-matches" }, "No stored item shares bits with it."));
}

function matchCard(match) {
  const li = element("li", { "data-testid": "match", "data-id": match.id });
  const button = element("button", { type: "button", class: "card", "aria-pressed": "false" });
  const img = thumbnailImg(match.id);
  const concepts = (match.concepts || []).slice(0, 3).map((c) => c.name).join(", ");
  button.append(img, element("span", { class: "id", "data-testid": "match-id" }, match.id));
  button.append(element("span", { "data-testid": "match-overlap" }, `${match.overlap || 0} bits shared`));
  if (concepts) button.append(element("span", { class: "muted" }, concepts));
  button.title = "Highlight the bits it shares with the query";
  button.addEventListener("click", guarded(() => chooseMatch(match.id, button)));
  li.append(button);
  fillThumbnail(img, match.id);
  return li;
}

async function chooseMatch(id, button) {
  const item = await getItem(id);
  const theirs = currentSpace() === "SPACE_VISUAL" ? item.visual : item.sdr;
  for (const other of $("matches").querySelectorAll("button.card")) other.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-pressed", "true");
  state.chosen = id;
  drawSdr(querySdr(), theirs || { active: [] });
  setStatus(`${$("sdr-canvas").dataset.shared} bits shared with ${id}`);
}

// ---- adding and the collection --------------------------------------------------------------------

const addToCollection = guarded(async () => {
  const id = $("add-id").value.trim();
  if (!state.file || !id) return;
  // Adding under a stored id replaces that item: said, and only once confirmed.
  const found = await api("POST", "/v1/items:exist", { ids: [id] });
  const replacing = Boolean(found.exists && found.exists[0]);
  if (replacing && !window.confirm(`An item with the id “${id}” is stored already. Replace it with this image?`)) {
    setStatus(`Not added: ${id} is stored already`);
    return;
  }
  setStatus(`${replacing ? "Replacing" : "Adding"} ${id}…`);
  const encoded = await encodeFile(state.file, id);
  state.items.delete(id);
  if (encoded.indexed) setStatus(`${replacing ? "Replaced" : "Added"} ${id}`);
  else setStatus(`Not added: ${encoded.duplicate ? `a copy is stored as ${encoded.duplicate.id}` : "the server kept none"}`);
  await Promise.all([loadPage(), refreshQuery(), loadInfo()]);
});

async function loadPage() {
  const token = state.pageTokens[state.pageTokens.length - 1];
  const params = new URLSearchParams({ page_size: String(PAGE_SIZE) });
  if (token) params.set("page_token", token);
  const page = await api("GET", `/v1/items?${params}`);
  state.nextToken = page.nextPageToken || "";
  const items = page.items || [];
  $("collection").replaceChildren(...items.map(collectionCard));
  if (!items.length) $("collection").append(element("li", { class: "muted" }, "Nothing stored yet."));
  $("collection-total").textContent = `${count(Number(page.total || 0), "item")}, page ${state.pageTokens.length}`;
  $("collection-prev").disabled = state.pageTokens.length < 2;
  $("collection-next").disabled = !state.nextToken;
}

function turnPage(step) {
  if (step > 0 && state.nextToken) state.pageTokens.push(state.nextToken);
  if (step < 0 && state.pageTokens.length > 1) state.pageTokens.pop();
  return loadPage();
}

function collectionCard(item) {
  const li = element("li", { "data-testid": "collection-item", "data-id": item.id });
  const img = thumbnailImg(item.id);
  const concepts = (item.concepts || []).slice(0, 3).map((c) => c.name).join(", ");
  const remove = element("button", { type: "button", "data-testid": "remove", "aria-label": `Remove ${item.id}` }, "Remove");
  remove.addEventListener("click", guarded(() => removeItem(item.id)));
  li.append(img, element("span", { class: "id" }, item.id));
  if (concepts) li.append(element("span", { class: "muted" }, concepts));
  li.append(remove);
  fillThumbnail(img, item.id, item.thumbnail);
  return li;
}

async function removeItem(id) {
  await api("DELETE", itemPath(id));
  state.items.delete(id);
  for (const card of $("matches").querySelectorAll("li[data-id]")) if (card.dataset.id === id) card.remove();
  setStatus(`Removed ${id}`);
  await Promise.all([loadPage(), loadInfo()]);
  // The last item of a later page gone: step back to a page that has items.
  if (!$("collection").querySelector("[data-id]") && state.pageTokens.length > 1) {
    state.pageTokens.pop();
    await loadPage();
  }
}

// ---- the map ------------------------------------------------------------------------------------

const makeMap = guarded(async () => {
  const button = $("map-button");
  const progress = $("map-progress");
  button.disabled = true;
  progress.hidden = false;
  $("map-image").hidden = true;
  try {
    let job = await api("POST", "/v1/maps", {});
    while (job.state !== "MAP_STATE_DONE" && job.state !== "MAP_STATE_FAILED") {
      progress.value = job.progress || 0;
      $("map-stage").textContent = `${job.stage || "queued"} ${Math.round((job.progress || 0) * 100)} %`;
      await new Promise((resolve) => setTimeout(resolve, MAP_POLL_MS));
      job = await api("GET", `/v1/maps/${encodeURIComponent(job.id)}`);
    }
    if (job.state === "MAP_STATE_FAILED") throw new Error(`The map failed: ${(job.error && job.error.message) || job.stage}`);
    progress.value = 1;
    $("map-stage").textContent = `${count(job.items || 0, "item")} in ${job.columns} × ${job.rows} cells`;
    $("map-image").src = `data:image/png;base64,${job.png}`;
    $("map-image").hidden = false;
  } finally {
    button.disabled = false;
    progress.hidden = true;
  }
});

// ---- start ---------------------------------------------------------------------------------------

const loadInfo = guarded(async () => {
  const info = await api("GET", "/v1/info");
  const provider = info.concepts ? `${info.concepts.name} ${info.concepts.model || ""}`.trim() : "";
  const stored = count(Number(info.indexSize || 0), "item");
  $("info").textContent = `server ${info.serverVersion || "?"} · ${stored} (${info.indexKind || "index"}) · concepts: ${provider}`;
});

function wire() {
  $("image-input").addEventListener("change", (event) => chooseFile(event.target.files[0]));
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    chooseFile(event.dataTransfer.files[0]);
  });
  $("add-form").addEventListener("submit", addToCollection);
  $("search-form").addEventListener("submit", search);
  $("space").addEventListener("change", guarded(() => state.query && refreshQuery()));
  $("collection-next").addEventListener("click", guarded(() => turnPage(+1)));
  $("collection-prev").addEventListener("click", guarded(() => turnPage(-1)));
  $("collection-refresh").addEventListener("click", guarded(loadPage));
  $("map-button").addEventListener("click", makeMap);
  drawSdr(null, null);
}

wire();
// One after the other: a server with a token prompts once, not twice.
loadInfo().then(guarded(loadPage));
