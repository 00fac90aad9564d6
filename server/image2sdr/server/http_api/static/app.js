// The image2sdr page: plain JS over the /v1 JSON endpoints (canonical proto JSON), no build step.
// Every value from the server reaches the DOM through textContent or an image URL, never innerHTML.
"use strict";

const TOKEN_KEY = "image2sdr.token";
const PAGE_SIZE = 12;
const MATCHES = 12;
const TERMS = 10;
const MAP_POLL_MS = 400;
const DUPLICATES_PAGE = 50;  // stored items looked at per "Look further"
const DUPLICATES_K = 50;     // copies asked for per item
const PARALLEL = 4;          // calls the page keeps in flight at once (the server has a few slots)
// Canvas colours (RGB): background, the query's bits, bits shared with the chosen match, the match's other bits.
const COLOURS = { empty: [255, 255, 255], query: [31, 41, 55], shared: [234, 88, 12], other: [147, 197, 253] };

const $ = (id) => document.getElementById(id);
const count = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

const state = {
  file: null,          // the chosen image (File)
  query: null,         // {semantic: Sdr|null, visual: Sdr|null, label: string}: what the canvas and matches show
  generation: 0,       // bumped by every new query, so a late answer for an old one is dropped
  chosen: null,        // id of the match whose shared bits are highlighted
  items: new Map(),    // id -> Promise<Item> (GET /v1/items/{id}?view=FULL: with its SDRs)
  pageTokens: [""],    // page tokens of the collection pages seen so far; the last is the current page
  nextToken: "",
  removing: null,      // {ids, label}: removals the user may still undo; sent on "Remove now" or when the page goes
  gone: new Set(),     // ids removed or being removed: hidden wherever they would show
  dup: null,           // the duplicates scan: {tokens, seen, groups, scanned}
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
    const pending = api("GET", `${itemPath(id)}?view=FULL`);  // the SDRs are drawn and compared
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

const thumbnailPath = (id) => `${itemPath(id)}/thumbnail`;

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

/**
 * Fill an <img> with the item's thumbnail (GET /v1/items/{id}/thumbnail, cached by its ETag); one it lacks is said.
 * With a token the picture is fetched with it (an <img> cannot send one) and shown from a blob: URL.
 */
async function fillThumbnail(img, id, placeholder = "no thumbnail", missing = () => img.replaceWith(element("span", { class: "thumb none" }, placeholder))) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    img.addEventListener("error", missing, { once: true });
    img.src = thumbnailPath(id);
    return;
  }
  try {
    const response = await fetch(thumbnailPath(id), { headers: { Authorization: `Bearer ${token}` } });
    if (!response.ok) return missing();
    img.src = URL.createObjectURL(await response.blob());
  } catch (_) {
    missing();
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

const SHOWN_CONCEPTS = 10; // an image has ~50 concepts, most of them faint: the rest on request

function renderConcepts(concepts, all = false) {
  const found = concepts || [];
  renderBars(
    $("concepts"),
    (all ? found : found.slice(0, SHOWN_CONCEPTS)).map((c) => ({
      name: c.name,
      value: c.confidence || 0,
      max: 1,
      label: `${Math.round((c.confidence || 0) * 100)} %`,
      testid: "concept",
      dim: !c.used,
      title: c.used ? "" : `not merged: ${c.skipReason || "skipped"}`,
    })),
  );
  if (!all && found.length > SHOWN_CONCEPTS) {
    const more = element("button", { type: "button", "data-testid": "more-concepts" }, `all ${found.length} concepts`);
    more.addEventListener("click", () => renderConcepts(found, true));
    const row = element("li", { class: "more" });
    row.append(more);
    $("concepts").append(row);
  }
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

/** Clear everything the last query put on screen: one query at a time, nothing of the previous one left beside it. */
function clearQuery(caption = "No query") {
  state.generation++;
  state.file = null;
  state.query = null;
  state.chosen = null;
  const preview = $("preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.removeAttribute("src");
  preview.hidden = true;
  $("concepts").replaceChildren();
  $("terms").replaceChildren();
  $("matches").replaceChildren();
  $("add-button").disabled = true;
  drawSdr(null, null);
  $("sdr-caption").textContent = caption;
}

async function encodeFile(file, id) {
  const form = new FormData();
  form.append("image", file, file.name || "image");
  if (id) form.append("id", id);
  return api("POST", "/v1/encode", form);
}

const chooseFile = guarded(async (file) => {
  if (!file) return;
  clearQuery(`Encoding ${file.name}…`);
  const generation = state.generation;
  // Each image proposes its own id: keeping the previous one would store this image over that item.
  $("add-id").value = idFor(file);
  setStatus(`Encoding ${file.name}…`);
  const encoded = await encodeFile(file);  // a refusal leaves the panels empty and Add disabled
  if (generation !== state.generation) return;
  state.file = file;
  const preview = $("preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  renderConcepts(encoded.concepts);
  $("add-button").disabled = false;
  setStatus(`Encoded ${file.name}; searching…`);
  await setQuery({ semantic: encoded.sdr, visual: encoded.visual || null, label: file.name });
  setStatus(`Encoded ${file.name} in ${Math.round((encoded.timings && encoded.timings.totalMs) || 0)} ms`);
});

/** Show a new query: its SDR, its decoded terms and its nearest stored items. */
function setQuery(query) {
  state.query = query;
  state.generation++;
  state.chosen = null;
  const visual = $("space").querySelector('[value="SPACE_VISUAL"]');
  visual.disabled = !query.visual;
  if (visual.disabled && visual.checked) $("space").querySelector('[value="SPACE_SEMANTIC"]').checked = true;
  return refreshQuery();
}

async function refreshQuery() {
  if (!state.query) return;
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

/** A stored item as the query: its thumbnail, concepts, SDR, terms and nearest items. */
async function openItem(id) {
  clearQuery(`Opening ${id}…`);
  const generation = state.generation;
  const item = await getItem(id);
  if (generation !== state.generation) return;
  const preview = $("preview");
  preview.hidden = false;
  fillThumbnail(preview, id, "", () => (preview.hidden = true));  // none stored: no picture, the rest stays
  renderConcepts(item.concepts);
  await setQuery({ semantic: item.sdr, visual: item.visual || null, label: `stored item ${id}` });
  setStatus(`Opened ${id}: its nearest stored items below`);
  $("encode-section").scrollIntoView({ block: "start" });
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
  clearQuery(`Searching for “${text}”…`);
  const generation = state.generation;
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
  list.replaceChildren(...(matches || []).filter((m) => !state.gone.has(m.id)).map(matchCard));
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
  state.gone.delete(id);  // stored again under an id removed before: shown again
  if (encoded.indexed) setStatus(`${replacing ? "Replaced" : "Added"} ${id}`);
  else setStatus(`Not added: ${encoded.duplicate ? `a copy is stored as ${encoded.duplicate.id}` : "the server kept none"}`);
  await Promise.all([loadPage(), refreshQuery(), loadInfo()]);
});

async function loadPage() {
  const token = state.pageTokens[state.pageTokens.length - 1];
  const params = new URLSearchParams({ page_size: String(PAGE_SIZE), view: "BASIC" });  // cards: no SDRs
  if (token) params.set("page_token", token);
  const page = await api("GET", `/v1/items?${params}`);
  state.nextToken = page.nextPageToken || "";
  const items = (page.items || []).filter((item) => !state.gone.has(item.id));
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
  remove.addEventListener("click", guarded(() => removeItems([item.id])));
  const open = element("button", { type: "button", class: "card", "data-testid": "open", title: "Use it as the query" });
  open.append(img, element("span", { class: "id" }, item.id));
  if (concepts) open.append(element("span", { class: "muted" }, concepts));
  open.addEventListener("click", guarded(() => openItem(item.id)));
  li.append(open, remove);
  fillThumbnail(img, item.id);
  return li;
}

// ---- removal, confirmed and undoable ------------------------------------------------------------------
//
// A removal is asked first, then held by the page: the items vanish from it at once and an Undo bar
// offers them back; the DELETE calls go when the user says "Remove now", starts another removal, or
// leaves the page (sent with keepalive, so they outlive it). Nothing is removed that the user could
// still take back, and a crashed tab removes nothing rather than something unasked.

async function removeItems(ids, reason = "") {
  const names = ids.length === 1 ? ids[0] : `${ids.length} items (${ids.join(", ")})`;
  if (!window.confirm(`Remove ${names} from the collection?${reason} You can undo it while this page is open.`)) {
    setStatus(`Kept ${names}`);
    return;
  }
  await commitRemoval();
  state.removing = { ids, label: names };
  for (const id of ids) state.gone.add(id);
  $("undo-text").textContent = `Removed ${names}.`;
  $("undo").hidden = false;
  hideGone();
  setStatus(`Removed ${names}`);
  await loadPage();
}

/** Send the held removals now (also what leaving the page does). */
async function commitRemoval(leaving = false) {
  const held = state.removing;
  if (!held) return;
  state.removing = null;
  $("undo").hidden = true;
  if (leaving) {
    const headers = { "X-Requested-With": "image2sdr-page" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    for (const id of held.ids) fetch(itemPath(id), { method: "DELETE", headers, keepalive: true });
    return;
  }
  for (const id of held.ids) {
    try {
      await api("DELETE", itemPath(id));
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;  // gone already: what was asked
    }
    state.items.delete(id);
  }
  await Promise.all([loadPage(), loadInfo()]);
  // The last item of a later page gone: step back to a page that has items.
  if (!$("collection").querySelector("[data-id]") && state.pageTokens.length > 1) {
    state.pageTokens.pop();
    await loadPage();
  }
}

async function undoRemoval() {
  const held = state.removing;
  if (!held) return;
  state.removing = null;
  $("undo").hidden = true;
  for (const id of held.ids) state.gone.delete(id);
  for (const cell of document.querySelectorAll(".gone[data-id]")) if (held.ids.includes(cell.dataset.id)) cell.classList.remove("gone");
  setStatus(`Kept ${held.label}`);
  await Promise.all([loadPage(), refreshQuery()]);
}

/** Take removed items off the matches, the map and the duplicate groups. */
function hideGone() {
  for (const card of document.querySelectorAll("#matches li[data-id], .groups li[data-id]")) {
    if (state.gone.has(card.dataset.id)) card.remove();
  }
  for (const cell of document.querySelectorAll(".map-cell[data-id]")) if (state.gone.has(cell.dataset.id)) cell.classList.add("gone");
}

// ---- the map ------------------------------------------------------------------------------------

const makeMap = guarded(async () => {
  const button = $("map-button");
  const progress = $("map-progress");
  button.disabled = true;
  progress.hidden = false;
  $("map-view").hidden = true;
  $("map-controls").hidden = true;
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
    drawMap(job);
  } finally {
    button.disabled = false;
    progress.hidden = true;
  }
});

/** The map as cells: each a button holding its thumbnail centre-cropped edge to edge, placed where the job put it. */
function drawMap(job) {
  const grid = $("map-grid");
  const columns = job.columns || 1;
  grid.style.gridTemplateColumns = `repeat(${columns}, var(--cell))`;
  // A small map fits the width; a large one starts at 64 px cells, big enough to tell pictures apart and
  // few enough in view to load at once (each is a request), and the zoom and a drag go from there.
  const fit = Math.floor(($("map-section").clientWidth || 960) / columns);
  setZoom(Math.max(64, Math.min(96, fit - (fit % 4))));
  grid.replaceChildren(...(job.cells || []).map(mapCell));
  $("map-view").hidden = false;
  $("map-controls").hidden = false;
  performance.mark("map-drawn");  // for benchmarks/bench_page.py: the job done, its cells placed
}

function mapCell(cell) {
  const button = element("button", { type: "button", class: "map-cell", "data-testid": "map-cell", "data-id": cell.id, title: cell.id });
  button.style.gridColumn = String((cell.column || 0) + 1);
  button.style.gridRow = String((cell.row || 0) + 1);
  if (state.gone.has(cell.id)) button.classList.add("gone");
  if (cell.thumbnail) {
    const img = element("img", { alt: cell.id, loading: "lazy", decoding: "async" });
    button.append(img);
    fillThumbnail(img, cell.id, cell.id);
  } else {
    button.append(element("span", { class: "bits" }, cell.id));
  }
  return button;
}

function setZoom(pixels) {
  $("map-zoom").value = String(pixels);
  $("map-grid").style.setProperty("--cell", `${pixels}px`);
}

/** Hovering a cell names it and its top concepts (read once per item). */
async function describeCell(event) {
  const cell = event.target.closest(".map-cell");
  if (!cell) return;
  const id = cell.dataset.id;
  $("map-tip").textContent = id;
  const item = await getItem(id);
  const concepts = (item.concepts || []).slice(0, 3).map((c) => `${c.name} ${Math.round((c.confidence || 0) * 100)} %`);
  if (cell.matches(":hover") || document.activeElement === cell) $("map-tip").textContent = [id, ...concepts].join(" · ");
}

/** Drag the view to pan a map larger than it (a click without a drag still opens the cell). */
function wirePanning(view) {
  let start = null;
  view.addEventListener("pointerdown", (event) => {
    start = { x: event.clientX, y: event.clientY, left: view.scrollLeft, top: view.scrollTop, moved: false };
  });
  view.addEventListener("pointermove", (event) => {
    if (!start || !(event.buttons & 1)) return;
    const dx = event.clientX - start.x, dy = event.clientY - start.y;
    if (Math.abs(dx) + Math.abs(dy) > 4) start.moved = true;
    if (!start.moved) return;
    view.classList.add("dragging");
    view.scrollLeft = start.left - dx;
    view.scrollTop = start.top - dy;
  });
  view.addEventListener("pointerup", () => view.classList.remove("dragging"));
  view.addEventListener("click", (event) => {
    const dragged = start && start.moved;
    start = null;
    const cell = event.target.closest(".map-cell");
    if (cell && !dragged && !cell.classList.contains("gone")) guarded(() => openItem(cell.dataset.id))(event);
  });
}

// ---- copies in the collection ---------------------------------------------------------------------
//
// FindDuplicates asked of each stored item, a page of the listing at a time; an item and the copies it
// finds make a group, shown once (an item already in a group is not asked again).

const findCopies = guarded(async () => {
  state.dup = { tokens: [""], seen: new Set(), groups: 0, scanned: 0 };
  $("duplicate-groups").replaceChildren();
  await scanCopies();
});

const scanMore = guarded(() => scanCopies());

async function scanCopies() {
  const dup = state.dup;
  const token = dup.tokens[dup.tokens.length - 1];
  if (token === null) return;
  $("duplicates-more").disabled = true;
  const params = new URLSearchParams({ page_size: String(DUPLICATES_PAGE), view: "BASIC" });  // ids only
  if (token) params.set("page_token", token);
  const page = await api("GET", `/v1/items?${params}`);
  const ids = (page.items || []).map((item) => item.id).filter((id) => !state.gone.has(id));
  await inParallel(ids, async (id) => {
    if (dup.seen.has(id)) return;
    const found = await copiesOf(id);
    const copies = found.filter((copy) => !state.gone.has(copy.id) && !dup.seen.has(copy.id));
    if (!copies.length || dup.seen.has(id)) return;
    for (const member of [id, ...copies.map((copy) => copy.id)]) dup.seen.add(member);
    dup.groups++;
    $("duplicate-groups").append(groupCard(id, copies));
  });
  dup.scanned += (page.items || []).length;
  dup.tokens.push(page.nextPageToken || null);
  $("duplicates-more").disabled = !page.nextPageToken;
  const of = page.total ? ` of ${page.total}` : "";
  $("duplicates-status").textContent = `${count(dup.groups, "group")} of copies among ${dup.scanned}${of} items looked at`;
}

/** The stored copies of ``id``; none for an item that cannot have any (stored by SDR alone). */
async function copiesOf(id) {
  try {
    return (await api("POST", "/v1/duplicates", { id, k: DUPLICATES_K })).duplicates || [];
  } catch (error) {
    if (error instanceof ApiError && error.status === 400) return [];
    throw error;
  }
}

async function inParallel(values, work) {
  const queue = [...values];
  const worker = async () => {
    while (queue.length) await work(queue.shift());
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, queue.length) }, worker));
}

const KINDS = { DUPLICATE_KIND_SAME_BYTES: "same bytes", DUPLICATE_KIND_NEAR_EXACT: "near-exact copy", DUPLICATE_KIND_TRANSFORMED: "transformed copy" };

const STAGES = { DUPLICATE_STAGE_FILE_HASH: "the file hash", DUPLICATE_STAGE_PHASH: "the pHash", DUPLICATE_STAGE_VISUAL: "the visual SDR", DUPLICATE_STAGE_KEYPOINTS: "keypoints" };

/** Which stage of the cascade called it a copy, and for keypoints what they found (a user sees why). */
function decidedBy(copy) {
  const stage = STAGES[copy.stage] || "the thresholds";
  if (copy.stage !== "DUPLICATE_STAGE_KEYPOINTS" || !copy.transform) return `decided by ${stage}`;
  const t = copy.transform;
  const turned = Math.round(t.rotationDegrees || 0);
  const kept = Math.round(((t.cropRight ?? 1) - (t.cropLeft ?? 0)) * ((t.cropBottom ?? 1) - (t.cropTop ?? 0)) * 100);
  return `decided by keypoints: ${copy.inliers} agree${turned ? `, turned ${turned}°` : ""}${t.mirrored ? ", mirrored" : ""}${kept < 100 ? `, ${kept} % of it shown` : ""}`;
}

function groupCard(id, copies) {
  const li = element("li", { "data-testid": "duplicate-group", "data-id": id });
  const strongest = KINDS[copies[0].kind] || String(copies[0].kind || "copy").toLowerCase();
  li.append(element("strong", { "data-testid": "group-kind" }, `${copies.length + 1} copies: ${strongest}`));
  const members = element("ul", { class: "members" });
  members.append(memberCard(id, "the item asked", [id, ...copies.map((copy) => copy.id)]));
  for (const copy of copies) {
    const phash = (copy.phashDistance ?? 0) < 0 ? "no fingerprint" : `pHash ${copy.phashDistance ?? 0} bits apart`;
    const visual = (copy.visualOverlap ?? 0) < 0 ? "no visual SDR" : `${Math.round((copy.visualShare ?? 0) * 100)} % visual bits shared`;
    const kind = KINDS[copy.kind] || String(copy.kind || "");
    members.append(memberCard(copy.id, `${kind} · ${decidedBy(copy)} · ${phash} · ${visual}`, [id, ...copies.map((c) => c.id)]));
  }
  li.append(members);
  return li;
}

function memberCard(id, detail, group) {
  const li = element("li", { "data-testid": "group-member", "data-id": id });
  const img = thumbnailImg(id);
  const keep = element("button", { type: "button", "data-testid": "keep-one", "aria-label": `Keep ${id}, remove the others` }, "Keep this one");
  keep.addEventListener("click", guarded(() => keepOne(id, group)));
  li.append(img, element("span", { class: "id" }, id), element("span", { class: "muted", "data-testid": "member-detail" }, detail), keep);
  fillThumbnail(img, id);
  return li;
}

async function keepOne(id, group) {
  const others = group.filter((member) => member !== id && !state.gone.has(member));
  if (others.length) await removeItems(others, ` (copies of ${id}, which stays)`);
}

// ---- custom concepts: the refinement loop ---------------------------------------------------------

const conceptPath = (name) => `/v1/concepts/${encodeURIComponent(name)}`;
const LABELS = [["yes", "yes"], ["no", "no"], ["skip", "skip"]];

const loadConcepts = guarded(async () => {
  const listed = await api("GET", "/v1/concepts");
  const concepts = listed.concepts || [];
  $("custom-status").textContent = concepts.length ? count(concepts.length, "concept") : "None defined yet (DefineConcept, or `image2sdr concept define`).";
  const open = $("custom-name").textContent;
  $("custom-list").replaceChildren(
    ...concepts.map((concept) => {
      const li = element("li");
      const button = element("button", { type: "button", "data-testid": "custom-concept", "data-name": concept.name, "aria-pressed": String(concept.name === open) }, concept.name);
      button.addEventListener("click", guarded(() => openConcept(concept.name)));
      li.append(button);
      return li;
    }),
  );
});

async function openConcept(name) {
  showConcept(await api("GET", conceptPath(name)));
}

/** A concept's panel: what it flags, and its suggestions to mark yes / no / skip. */
function showConcept(concept) {
  $("custom-panel").hidden = false;
  $("custom-name").textContent = concept.name;
  for (const chip of document.querySelectorAll('[data-testid="custom-concept"]')) chip.setAttribute("aria-pressed", String(chip.dataset.name === concept.name));
  $("custom-summary").textContent = conceptSummary(concept);
  const suggestions = concept.suggestions || [];
  $("custom-suggestions").replaceChildren(...suggestions.map((s, n) => suggestionCard(s, n)));
  const kept = (concept.positiveIds || []).length;
  const lostPositives = Number(concept.positives || 0) - kept;
  const lostNegatives = Number(concept.negatives || 0) - (concept.negativeIds || []).length;
  // Images given as examples are not kept by the server: a refit from here would drop them.
  const refit = $("custom-refit");
  refit.disabled = lostPositives > 0 || !suggestions.length;
  refit.onclick = guarded(() => refitConcept(concept));
  $("custom-note").textContent = lostPositives > 0
    ? `${count(lostPositives, "positive example")} given as images, which the server does not keep: refit it with them (image2sdr concept refine --pos …).`
    : lostNegatives > 0 ? `${count(lostNegatives, "negative example")} (images or stand-ins) will be left out.` : "";
}

function conceptSummary(concept) {
  const examples = `${concept.positives || 0} positive, ${concept.negatives || 0} negative examples`;
  const found = concept.background;
  if (!found) return `${examples} · too few stored items (under 50) to say what it flags`;
  const share = Number(found.flagged || 0);
  const items = Number(found.items || 0);
  // The precision is an upper bound (far off when the concept does not separate well): said as one.
  const precision = share > 0 ? ` · precision at most ${Math.round(Number(found.precision || 0) * 100)} %` : "";
  return `Flags ${(share * 100).toFixed(1)} % of ${count(items, "stored item")} (about ${Math.round(share * items)}) · ${examples}${precision}`;
}

function suggestionCard(suggestion, n) {
  const li = element("li", { "data-testid": "suggestion", "data-id": suggestion.id });
  const img = thumbnailImg(suggestion.id);
  const labels = element("fieldset", { class: "labels", "aria-label": `Does ${suggestion.id} show it?` });
  for (const [value, text] of LABELS) {
    const input = element("input", { type: "radio", name: `label-${n}`, value, "data-testid": `label-${value}` });
    if (value === "skip") input.checked = true;
    const label = element("label");
    label.append(input, ` ${text}`);
    labels.append(label);
  }
  li.append(img, element("span", { class: "id" }, suggestion.id), element("span", { class: "muted" }, `confidence ${Number(suggestion.confidence || 0).toFixed(2)}`), labels);
  fillThumbnail(img, suggestion.id);
  return li;
}

/** Define the concept again: its kept examples plus the suggestions marked yes (positives) and no (negatives). */
async function refitConcept(concept) {
  const marked = (value) => [...document.querySelectorAll('[data-testid="suggestion"]')]
    .filter((card) => card.querySelector(`input[value="${value}"]`).checked)
    .map((card) => card.dataset.id);
  const yes = marked("yes");
  const no = marked("no");
  if (!yes.length && !no.length) {
    setStatus("Mark at least one suggestion yes or no to refit.");
    return;
  }
  const ids = (list) => [...new Set(list)].map((id) => ({ id }));
  setStatus(`Refitting ${concept.name} with ${count(yes.length, "yes", "yes")} and ${count(no.length, "no", "no")}…`);
  const body = { name: concept.name, positives: ids([...(concept.positiveIds || []), ...yes]), negatives: ids([...(concept.negativeIds || []), ...no]) };
  const refitted = await api("POST", "/v1/concepts", body);
  showConcept(refitted);
  setStatus(`Refitted ${refitted.name}: ${conceptSummary(refitted)}`);
}

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
  $("map-zoom").addEventListener("input", (event) => setZoom(Number(event.target.value)));
  $("map-grid").addEventListener("mouseover", guarded(describeCell));
  $("map-grid").addEventListener("focusin", guarded(describeCell));
  wirePanning($("map-view"));
  $("duplicates-button").addEventListener("click", findCopies);
  $("duplicates-more").addEventListener("click", scanMore);
  $("custom-refresh").addEventListener("click", loadConcepts);
  $("undo-button").addEventListener("click", guarded(undoRemoval));
  $("undo-commit").addEventListener("click", guarded(() => commitRemoval()));
  // Leaving the page sends what it holds: a removal is undoable only while the page is open.
  window.addEventListener("pagehide", () => commitRemoval(true));
  drawSdr(null, null);
}

wire();
// One after the other: a server with a token prompts once, not twice.
loadInfo().then(guarded(loadPage)).then(loadConcepts);
