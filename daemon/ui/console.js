// The s5vec console: plain ES module, no build step, nothing from the internet. Every call
// goes to the daemon that served this page, with the API key of the key field (if any) as
// `Authorization: Bearer`, the way every other client sends it.

const $ = (selector) => document.querySelector(selector);
const KEY_STORAGE = "s5vec-console-key";
const state = { collections: [], selected: null, feed: null };

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

async function call(method, path, body) {
  const headers = {};
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.error ? `${data.error.code}: ${data.error.message}` : `HTTP ${response.status}`);
    error.status = response.status;
    error.code = data.error && data.error.code;
    throw error;
  }
  return data;
}

function show(message) {
  const box = $("#message");
  box.textContent = message || "";
  box.hidden = !message;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "—" : String(text);
  if (className) td.className = className;
  return td;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "—";
}

// ------------------------------------------------------------------ collections
async function loadCollections() {
  const { collections } = await call("GET", "/api/v1/collections");
  state.collections = collections;
  const body = $("#collections tbody");
  body.replaceChildren();
  for (const c of collections) {
    const row = body.insertRow();
    row.dataset.name = c.name;
    if (c.name === state.selected) row.classList.add("selected");
    cell(row, c.name);
    cell(row, c.dimension, "num");
    cell(row, c.metric);
    cell(row, c.count, "num");
    cell(row, c.recent, "num");
    cell(row, c.indexed, "num");
    cell(row, c.pending, "num");
    cell(row, c.historical, "num");
    cell(row, c.segments, "num");
    cell(row, c.embedding_model);
    const cal = c.calibrated || {};
    cell(row, `ef ${cal.ef}, nprobe ${cal.nprobe}${cal.recall ? `, recall ${cal.recall}` : ""}`);
    row.addEventListener("click", () => select(c.name));
  }
  $("#no-collections").hidden = collections.length > 0;
  const picker = $("#search-collection");
  picker.replaceChildren(...collections.map((c) => new Option(c.name, c.name)));
  if (!state.selected && collections.length) state.selected = collections[0].name;
  if (state.selected) picker.value = state.selected;
  updateSearchHints();
}

function select(name) {
  state.selected = name;
  $("#search-collection").value = name;
  for (const row of document.querySelectorAll("#collections tbody tr")) {
    row.classList.toggle("selected", row.dataset.name === name);
  }
  updateSearchHints();
  if (state.feed) startFeed();  // follow the newly selected collection
}

function updateSearchHints() {
  const info = state.collections.find((c) => c.name === state.selected);
  const textOption = document.querySelector('input[name="by"][value="text"]');
  textOption.disabled = !(info && info.embedding_model);
  if (textOption.disabled && textOption.checked) document.querySelector('input[name="by"][value="vector"]').checked = true;
  const by = document.querySelector('input[name="by"]:checked').value;
  const query = $("#search-query");
  query.placeholder = by === "vector" ? (info ? `[${Array(Math.min(info.dimension, 4)).fill("0.1").join(", ")}${info.dimension > 4 ? ", …" : ""}]` : "[0.1, 0.2]")
    : by === "id" ? "a record id" : "a sentence";
}

// ------------------------------------------------------------------ search
function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${what} is not valid JSON`);
  }
}

async function search(event) {
  event.preventDefault();
  show("");
  const collection = $("#search-collection").value;
  const by = document.querySelector('input[name="by"]:checked').value;
  const query = $("#search-query").value.trim();
  const k = Number($("#search-k").value || 10);
  const body = { k, options: { include_metadata: true } };
  const filterText = $("#search-filter").value.trim();
  if (filterText) body.filter = parseJson(filterText, "the filter");
  if ($("#search-ef").value) body.options.hnsw_ef = Number($("#search-ef").value);
  if ($("#search-nprobe").value) body.options.ivf_nprobe = Number($("#search-nprobe").value);
  if ($("#search-threshold").value) body.options.score_threshold = Number($("#search-threshold").value);
  const path = `/api/v1/collections/${encodeURIComponent(collection)}`;
  if (by === "vector") body.vector = parseJson(query, "the vector");
  else if (by === "text") body.text = query;
  else {  // a stored record's vector; the record itself is left out of its own answers
    const record = await call("GET", `${path}/vectors/${encodeURIComponent(query)}?include_vector=true`);
    body.vector = record.vector;
    body.k = k + 1;
  }
  const answer = await call("POST", `${path}/search`, body);
  let results = answer.results;
  if (by === "id") results = results.filter((hit) => hit.id !== query).slice(0, k);
  const rows = $("#results tbody");
  rows.replaceChildren();
  results.forEach((hit, index) => {
    const row = rows.insertRow();
    cell(row, index + 1, "num");
    cell(row, hit.id);
    cell(row, hit.score.toFixed(4), "num");
    cell(row, hit.distance.toFixed(4), "num");
    cell(row, JSON.stringify(hit.metadata || {}), "meta");
  });
  $("#search-summary").textContent = `${results.length} result${results.length === 1 ? "" : "s"} in ${answer.search_time_ms} ms`
    + (answer.cached ? " (cached)" : "") + (answer.partial ? " — partial: the search timed out" : "");
}

// ------------------------------------------------------------------ live feed (SSE)
// Read with fetch, not EventSource: EventSource cannot send the API key.
function stopFeed() {
  if (state.feed) state.feed.abort();
  state.feed = null;
  $("#feed-toggle").textContent = "Follow";
  $("#feed-status").textContent = "Not following.";
}

function addFeedItem(kind, data, notice) {
  const item = document.createElement("li");
  const type = document.createElement("span");
  type.className = notice ? "type notice" : "type";
  type.textContent = kind;
  item.append(type, " ");
  const detail = document.createElement("code");
  if (data.record) detail.textContent = `${data.collection}/${data.record.id} lsn ${data.lsn} ${JSON.stringify(data.record.metadata || {})}`;
  else detail.textContent = JSON.stringify(data);
  item.append(detail);
  const list = $("#feed");
  list.prepend(item);
  while (list.children.length > 200) list.lastChild.remove();
}

async function startFeed() {
  if (state.feed) state.feed.abort();
  const controller = new AbortController();
  state.feed = controller;
  const collection = state.selected;
  const params = new URLSearchParams();
  if (collection) params.append("collection", collection);
  $("#feed-toggle").textContent = "Stop";
  $("#feed-status").textContent = `Following ${collection || "every collection"} from now on.`;
  const headers = { Accept: "text/event-stream" };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  try {
    const response = await fetch(`/api/v1/stream/updates?${params}`, { headers, signal: controller.signal });
    if (!response.ok) throw new Error(`the change feed answered ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let kind = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) kind = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trim());
        }
        if (!data.length) continue;  // a heartbeat comment
        const parsed = JSON.parse(data.join("\n"));
        addFeedItem(kind, parsed, !kind.startsWith("vector_") && !kind.endsWith("_completed") && !kind.endsWith("_started"));
      }
    }
    if (state.feed === controller) $("#feed-status").textContent = "The feed ended (the daemon stopped?).";
  } catch (error) {
    if (error.name !== "AbortError") show(error.message);
  } finally {
    if (state.feed === controller) {
      state.feed = null;
      $("#feed-toggle").textContent = "Follow";
    }
  }
}

// ------------------------------------------------------------------ health and jobs
async function loadHealth() {
  const badge = $("#health-badge");
  let health;
  try {
    health = await call("GET", "/health");
  } catch (error) {
    badge.textContent = "unreachable";
    badge.className = "badge down";
    throw error;
  }
  badge.textContent = health.status;
  badge.className = `badge ${health.status}`;
  $("#version").textContent = health.version;
  const facts = [
    ["status", health.status], ["uptime", `${Math.round(health.uptime_s)} s`], ["collections", health.collections],
    ["storage", `${health.storage.mode}, ${health.storage.status}${health.storage.reason ? ` (${health.storage.reason})` : ""}`],
    ["applied LSN", health.applied_lsn], ["checkpoint LSN", health.checkpoint_lsn], ["WAL", `${health.wal_bytes} bytes`],
  ];
  $("#health").replaceChildren(...facts.flatMap(([name, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    return [dt, dd];
  }));
}

async function loadJobs() {
  const note = $("#jobs-note");
  const rows = $("#jobs tbody");
  try {
    const { jobs } = await call("GET", "/api/v1/admin/jobs");
    note.hidden = true;
    rows.replaceChildren();
    for (const job of jobs) {
      const row = rows.insertRow();
      cell(row, job.name);
      cell(row, job.schedule);
      cell(row, job.runs, "num");
      cell(row, job.failures, "num");
      cell(row, job.running ? "running" : job.last_outcome);
      cell(row, when(job.last_finished));
      cell(row, when(job.next_run));
    }
  } catch (error) {
    if (error.status !== 401 && error.status !== 403) throw error;
    rows.replaceChildren();
    note.textContent = "Job status needs an API key with the admin scope.";
    note.hidden = false;
  }
}

async function refresh() {
  show("");
  try {
    await loadHealth();
    await loadCollections();
    await loadJobs();
    document.body.dataset.loaded = "true";
  } catch (error) {
    show(error.status === 401 ? "This daemon needs an API key: enter one above." : error.message);
  }
}

function wire() {
  $("#api-key").value = apiKey();
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("#api-key").value.trim());
    refresh();
  });
  $("#refresh").addEventListener("click", refresh);
  $("#search-form").addEventListener("submit", (event) => search(event).catch((error) => show(error.message)));
  $("#search-collection").addEventListener("change", (event) => select(event.target.value));
  for (const option of document.querySelectorAll('input[name="by"]')) option.addEventListener("change", updateSearchHints);
  $("#feed-toggle").addEventListener("click", () => (state.feed ? stopFeed() : startFeed()));
  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, 10_000);
}

wire();
