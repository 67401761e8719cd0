// s5vec client for browsers and Node (>= 20): REST, WebSocket and server-sent events.
// Plain ESM with JSDoc types (index.d.ts has the public types); no dependencies beyond the
// platform: fetch, ReadableStream, TextDecoder/TextEncoder, AbortController, WebSocket.

/** @typedef {import("./index.d.ts").ClientOptions} ClientOptions */

export const DEFAULT_URL = "http://127.0.0.1:7533";
const RETRY_STATUSES = new Set([429, 502, 503, 504]);

/** Every failure: `status` (null when no answer came), the server's `code`, and `field`. */
export class S5vecError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number|null, code?: string, field?: string|null, body?: unknown, cause?: unknown}} [info]
   */
  constructor(message, info = {}) {
    super(message, info.cause === undefined ? undefined : { cause: info.cause });
    this.name = "S5vecError";
    this.status = info.status ?? null;
    this.code = info.code ?? "error";
    this.field = info.field ?? null;
    this.body = info.body;
  }
}

/** @param {number} ms @param {AbortSignal} [signal] */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => { signal?.removeEventListener("abort", onAbort); resolve(undefined); }, ms);
    function onAbort() { clearTimeout(timer); reject(signal?.reason); }
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Exponential backoff with full jitter: 0 .. min(max, base * 2^attempt). */
function backoff(attempt, base, max) {
  return Math.random() * Math.min(max, base * 2 ** attempt);
}

/** JSON text; typed arrays (Float32Array vectors) become JSON arrays. */
function toJSON(value) {
  return JSON.stringify(value, (_, v) => (ArrayBuffer.isView(v) && !(v instanceof DataView) ? Array.from(/** @type {any} */ (v)) : v));
}

/** @param {Response} response */
async function errorFrom(response) {
  let body;
  const text = await response.text().catch(() => "");
  try { body = JSON.parse(text); } catch { body = text; }
  const err = body && typeof body === "object" && body.error ? body.error : null;
  return new S5vecError(err?.message ?? `HTTP ${response.status}${text ? `: ${text.slice(0, 200)}` : ""}`, {
    status: response.status, code: err?.code ?? `http_${response.status}`, field: err?.field ?? null, body,
  });
}

/** @param {Record<string, unknown>} obj */
function compact(obj) {
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const [k, v] of Object.entries(obj)) if (v !== undefined) out[k] = v;
  return out;
}

/** Lines of a byte stream (`\n`, `\r\n` or `\r` ends a line), decoded as UTF-8. */
async function* lines(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let dropLF = false;
  try {
    while (true) {
      if (signal?.aborted) return;
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const ch = buffer[i];
        if (ch === "\n" && dropLF && i === start) { start = i + 1; dropLF = false; continue; }
        dropLF = false;
        if (ch === "\n" || ch === "\r") {
          yield buffer.slice(start, i);
          dropLF = ch === "\r";
          start = i + 1;
        }
      }
      buffer = buffer.slice(start);
      if (done) {
        if (buffer) yield buffer;
        return;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** NDJSON body for `ingest`: a string/bytes as is, records one JSON line each. */
function ndjsonLine(record) {
  return typeof record === "string" ? (record.endsWith("\n") ? record : record + "\n") : toJSON(record) + "\n";
}

export class S5vecClient {
  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    const env = globalThis.process?.env ?? {};
    this.url = (options.url ?? env.S5VEC_URL ?? DEFAULT_URL).replace(/\/+$/, "");
    this.apiKey = options.apiKey ?? env.S5VEC_API_KEY ?? null;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.retries = options.retries ?? 3;
    this.retryBaseMs = options.retryBaseMs ?? 100;
    this.retryMaxMs = options.retryMaxMs ?? 5_000;
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this._fetch) throw new TypeError("no fetch available: pass options.fetch");
  }

  /** @param {Record<string, string>} [extra] */
  _headers(extra = {}) {
    const headers = { ...extra };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    return headers;
  }

  /**
   * One REST call: JSON in and out, typed errors, retries for calls safe to repeat.
   * @param {string} method @param {string} path
   * @param {{body?: unknown, raw?: BodyInit, query?: Record<string, unknown>, idempotent?: boolean,
   *          contentType?: string, stream?: boolean, signal?: AbortSignal, headers?: Record<string,string>}} [opts]
   */
  async request(method, path, opts = {}) {
    const url = new URL(this.url + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) {
      if (v === undefined || v === null) continue;
      for (const item of Array.isArray(v) ? v : [v]) {
        url.searchParams.append(k, typeof item === "object" ? JSON.stringify(item) : String(item));
      }
    }
    const idempotent = opts.idempotent ?? (method === "GET" || method === "PUT");
    /** @type {Record<string, string>} */
    const extra = { ...(opts.headers ?? {}) };
    let body = opts.raw;
    if (opts.body !== undefined) {
      body = toJSON(opts.body);
      extra["Content-Type"] = "application/json";
    } else if (opts.contentType) {
      extra["Content-Type"] = opts.contentType;
    }
    const streaming = body !== undefined && typeof body === "object" && body !== null && "getReader" in body;
    for (let attempt = 0; ; attempt++) {
      const controller = new AbortController();
      const onAbort = () => controller.abort(opts.signal?.reason);
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      // a streamed request or answer may take as long as it needs; anything else has timeoutMs
      const timer = opts.stream || streaming ? null : setTimeout(() => controller.abort(new Error("timeout")), this.timeoutMs);
      let response;
      try {
        /** @type {RequestInit & {duplex?: string}} */
        const init = { method, headers: this._headers(extra), body, signal: controller.signal };
        if (streaming) init.duplex = "half";
        response = await this._fetch(url, init);
      } catch (cause) {
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
        if (opts.signal?.aborted) throw cause;
        const timedOut = controller.signal.aborted;
        // a connection that could not be opened (Node says so; browsers do not) sent
        // nothing, so any call may retry then; after other failures only idempotent ones
        const refused = cause?.cause?.code === "ECONNREFUSED";
        if ((idempotent || refused) && !streaming && attempt < this.retries) {
          await sleep(backoff(attempt, this.retryBaseMs, this.retryMaxMs), opts.signal);
          continue;
        }
        throw new S5vecError(timedOut ? `request timed out after ${this.timeoutMs} ms` : `cannot reach ${this.url}: ${cause?.message ?? cause}`,
          { code: timedOut ? "timeout" : "connection_failed", cause });
      }
      if (!opts.stream) {
        // the body still has to arrive within the timeout
        try {
          if (response.ok) {
            const text = await response.text();
            return text ? JSON.parse(text) : null;
          }
        } catch (cause) {
          throw new S5vecError(`reading the answer failed: ${cause?.message ?? cause}`, { code: "connection_failed", cause });
        } finally {
          if (timer) clearTimeout(timer);
          opts.signal?.removeEventListener("abort", onAbort);
        }
      }
      if (response.ok) return response;
      const error = await errorFrom(response);
      if (timer) clearTimeout(timer);
      if (idempotent && !streaming && RETRY_STATUSES.has(response.status) && attempt < this.retries) {
        const after = Number(response.headers.get("Retry-After"));
        const delay = Number.isFinite(after) && after > 0 ? Math.min(after * 1000, this.retryMaxMs) : backoff(attempt, this.retryBaseMs, this.retryMaxMs);
        await sleep(delay, opts.signal);
        continue;
      }
      throw error;
    }
  }

  // ------------------------------------------------------------------ health
  health() { return this.request("GET", "/health"); }
  ready() { return this.request("GET", "/ready"); }

  // ------------------------------------------------------------- collections
  async listCollections() { return (await this.request("GET", "/api/v1/collections")).collections; }

  /** Create (an identical existing collection is fine: 200, so this is safe to retry). */
  createCollection(name, options) {
    return this.request("POST", "/api/v1/collections", { body: { name, ...options }, idempotent: true });
  }

  getCollection(name) { return this.request("GET", `/api/v1/collections/${encodeURIComponent(name)}`); }

  dropCollection(name) {
    return this.request("DELETE", `/api/v1/collections/${encodeURIComponent(name)}`, { idempotent: false });
  }

  // ------------------------------------------------------------------ records
  _c(collection) { return `/api/v1/collections/${encodeURIComponent(collection)}`; }

  /** Upsert one record `{id, vector | text, metadata?, timestamp?}`. */
  upsert(collection, record) {
    return this.request("POST", `${this._c(collection)}/vectors`, { body: record, idempotent: true });
  }

  /** Upsert up to 10,000 records; per-record errors in the answer. */
  upsertBatch(collection, records) {
    return this.request("POST", `${this._c(collection)}/vectors/batch`, { body: { vectors: records }, idempotent: true });
  }

  get(collection, id, { includeVector = true } = {}) {
    return this.request("GET", `${this._c(collection)}/vectors/${encodeURIComponent(String(id))}`,
      { query: { include_vector: includeVector } });
  }

  /** Replace a record's metadata (PUT); with `{merge: true}`, merge into it instead (PATCH,
   * JSON Merge Patch: `null` deletes a key, objects merge recursively). */
  updateMetadata(collection, id, metadata, { merge = false } = {}) {
    return this.request(merge ? "PATCH" : "PUT", `${this._c(collection)}/vectors/${encodeURIComponent(String(id))}`,
      { body: { metadata }, idempotent: true });
  }

  /** Delete by ids (an array) or by filter (`{filter}`): `{deleted}` is how many existed. */
  async delete(collection, target) {
    const body = Array.isArray(target) ? { ids: target.map(String) } : target;
    // by ids a repeat gives the same state; by filter it could hit records written in between
    return this.request("POST", `${this._c(collection)}/vectors/delete`, { body, idempotent: "ids" in body });
  }

  /**
   * Records matching a metadata filter (all without one): `{records, count, total}`.
   * @param {string} collection @param {object | null} [filter]
   * @param {{limit?: number, offset?: number, includeVector?: boolean}} [page]
   */
  find(collection, filter, { limit, offset, includeVector } = {}) {
    return this.request("GET", `${this._c(collection)}/vectors`,
      { query: { filter: filter ?? undefined, limit, offset, include_vector: includeVector } });
  }

  /**
   * The `k` nearest records: `search(c, vector, {k, filter, options})`, or with `text`
   * instead of a vector on a collection with an embedding model (`vector` null).
   * @param {string} collection @param {ArrayLike<number> | null} vector
   * @param {import("./index.d.ts").SearchParams} [params]
   */
  search(collection, vector, { k = 10, filter, options, text } = {}) {
    const body = compact({ vector: vector ?? undefined, text, k, filter, options });
    return this.request("POST", `${this._c(collection)}/search`, { body, idempotent: true });
  }

  /**
   * Stream records as NDJSON (`POST .../ingest`): a string or bytes (retried), or any
   * (async) iterable of records or lines, sent as one streamed request (never retried).
   */
  ingest(collection, records) {
    const path = `${this._c(collection)}/ingest`;
    const contentType = "application/x-ndjson";
    if (typeof records === "string" || records instanceof Uint8Array) {
      return this.request("POST", path, { raw: /** @type {BodyInit} */ (records), contentType, idempotent: true });
    }
    if (Array.isArray(records)) {
      return this.request("POST", path, { raw: records.map(ndjsonLine).join(""), contentType, idempotent: true });
    }
    const encoder = new TextEncoder();
    const iterator = (records[Symbol.asyncIterator] ?? records[Symbol.iterator]).call(records);
    const stream = new ReadableStream({
      async pull(controller) {
        let chunk = "";
        while (chunk.length < 64 * 1024) {
          const { value, done } = await iterator.next();
          if (done) {
            if (chunk) controller.enqueue(encoder.encode(chunk));
            controller.close();
            return;
          }
          chunk += ndjsonLine(value);
        }
        controller.enqueue(encoder.encode(chunk));
      },
      async cancel() { await iterator.return?.(); },
    });
    return this.request("POST", path, { raw: stream, contentType, idempotent: false });
  }

  /**
   * Every record in id order (`GET .../export`), as an async iterator.
   * @param {string} collection @param {{includeVector?: boolean, after?: string, signal?: AbortSignal}} [options]
   */
  async *export(collection, { includeVector, after, signal } = {}) {
    const response = await this.request("GET", `${this._c(collection)}/export`,
      { query: { include_vector: includeVector, after }, stream: true, signal });
    for await (const line of lines(response.body, signal)) if (line.trim()) yield JSON.parse(line);
  }

  // ------------------------------------------------------------------- admin
  statistics() { return this.request("GET", "/api/v1/admin/statistics"); }
  checkpoint() { return this.request("POST", "/api/v1/admin/checkpoint", { idempotent: true }); }

  // ------------------------------------------------------------------- feeds
  /** Open the WebSocket API (authenticated with a first `auth` message when there is a key). */
  async ws() {
    if (!this._WebSocket) {
      throw new S5vecError("no WebSocket available: pass options.WebSocket (Node 20: run with --experimental-websocket)",
        { code: "unsupported" });
    }
    const socket = new S5vecSocket(this.url.replace(/^http/, "ws") + "/api/v1/ws", this._WebSocket, this.timeoutMs);
    await socket._open();
    if (this.apiKey) await socket.request("auth", { key: this.apiKey });
    return socket;
  }

  /**
   * The change feed over server-sent events, as an async iterator that reconnects with
   * `Last-Event-ID` (fetch, not EventSource: EventSource cannot send an API key).
   * @param {import("./index.d.ts").UpdatesOptions} [options]
   */
  updates(options = {}) { return new EventFeed(this, options); }
}

/** The SSE change feed: `for await (const event of feed)`; `lastEventId` is where it stands. */
export class EventFeed {
  constructor(client, options) {
    this.client = client;
    this.options = options;
    this.lastEventId = options.lastEventId != null ? String(options.lastEventId) : null;
    this.controller = new AbortController();
    if (options.signal) options.signal.addEventListener("abort", () => this.close(), { once: true });
    this.retryMs = options.retryMs ?? 500;
    this.maxRetryMs = options.maxRetryMs ?? 10_000;
  }

  close() { this.controller.abort(new Error("closed")); }

  async *[Symbol.asyncIterator]() {
    const { collections, types, filter, includeVector } = this.options;
    const signal = this.controller.signal;
    let failures = 0;
    try {
      while (!signal.aborted) {
        /** @type {Response} */
        let response;
        try {
          response = await this.client.request("GET", "/api/v1/stream/updates", {
            query: { collection: collections, types: types?.join(","), filter, include_vector: includeVector },
            headers: { Accept: "text/event-stream", ...(this.lastEventId != null ? { "Last-Event-ID": this.lastEventId } : {}) },
            stream: true, signal, idempotent: false,
          });
        } catch (error) {
          if (signal.aborted) return;
          const status = error instanceof S5vecError ? error.status : null;
          if (status !== null && !RETRY_STATUSES.has(status)) throw error; // 4xx: a mistake to report
          await sleep(backoff(failures++, this.retryMs, this.maxRetryMs), signal).catch(() => {});
          continue;
        }
        let event = "message";
        let data = [];
        try {
          for await (const line of lines(response.body, signal)) {
            if (line === "") {
              if (data.length) {
                const text = data.join("\n");
                let parsed;
                try { parsed = JSON.parse(text); } catch { parsed = text; }
                failures = 0;
                yield { type: event, id: this.lastEventId, data: parsed };
              }
              event = "message";
              data = [];
              continue;
            }
            if (line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            const name = colon < 0 ? line : line.slice(0, colon);
            let value = colon < 0 ? "" : line.slice(colon + 1);
            if (value.startsWith(" ")) value = value.slice(1);
            if (name === "event") event = value;
            else if (name === "data") data.push(value);
            else if (name === "id" && !value.includes("\0")) this.lastEventId = value;
            else if (name === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
          }
        } catch (error) {
          if (signal.aborted) return;
          // the connection broke: reconnect from lastEventId below
        }
        if (signal.aborted) return;
        await sleep(backoff(failures++, this.retryMs, this.maxRetryMs), signal).catch(() => {});
      }
    } finally {
      this.controller.abort(new Error("closed"));
    }
  }
}

/** One subscription (change feed or standing query) on a socket: an async iterator. */
export class Subscription {
  constructor(socket, reply) {
    this.socket = socket;
    this.sub = reply.sub;
    this.lsn = reply.lsn;
    this.since = reply.since;
    this.results = reply.results ?? null;
    this.queue = [];
    /** @type {((v: IteratorResult<any>) => void) | null} */
    this.waiter = null;
    this.closed = false;
    this.error = null;
  }

  _push(item) {
    if (this.waiter) { const w = this.waiter; this.waiter = null; w({ value: item, done: false }); }
    else this.queue.push(item);
  }

  _end(error = null) {
    if (this.closed) return;
    this.closed = true;
    this.error = error;
    if (this.waiter) {
      const w = this.waiter; this.waiter = null;
      if (error) this._rejecter?.(error); else w({ value: undefined, done: true });
    }
  }

  next() {
    if (this.queue.length) return Promise.resolve({ value: this.queue.shift(), done: false });
    if (this.closed) return this.error ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => { this.waiter = resolve; this._rejecter = reject; });
  }

  async return() { await this.close(); return { value: undefined, done: true }; }

  [Symbol.asyncIterator]() { return this; }

  /** Unsubscribe (idempotent). */
  async close() {
    if (this.closed) return;
    this._end();
    this.socket.subscriptions.delete(this.sub);
    if (this.socket.isOpen) await this.socket.request("unsubscribe", { sub: this.sub }).catch(() => {});
  }
}

/** The WebSocket API: requests matched to replies by id, and subscriptions. */
export class S5vecSocket {
  constructor(url, WebSocketImpl, timeoutMs) {
    this.url = url;
    this.timeoutMs = timeoutMs;
    this.ws = new WebSocketImpl(url);
    this.nextId = 1;
    /** @type {Map<string|number, {resolve: Function, reject: Function, timer: any}>} */
    this.pending = new Map();
    /** @type {Map<string, Subscription>} */
    this.subscriptions = new Map();
    /** @type {Map<string, any[]>} frames of subscriptions not registered yet */
    this.early = new Map();
    this.closeCode = null;
    this.ws.onmessage = (event) => this._receive(event.data);
    this.ws.onclose = (event) => this._closed(event.code, event.reason);
  }

  get isOpen() { return this.ws.readyState === 1; }

  _open() {
    return new Promise((resolve, reject) => {
      this.ws.onopen = () => resolve(undefined);
      this.ws.onerror = () => reject(new S5vecError(`cannot open ${this.url}`, { code: "connection_failed" }));
    });
  }

  async _receive(data) {
    const text = typeof data === "string" ? data : new TextDecoder().decode(data instanceof Blob ? await data.arrayBuffer() : data);
    let frame;
    try { frame = JSON.parse(text); } catch { return; }
    const waiting = frame.id != null ? this.pending.get(frame.id) : undefined;
    if (waiting) {
      this.pending.delete(frame.id);
      clearTimeout(waiting.timer);
      if (frame.type === "error") {
        const e = frame.error ?? {};
        waiting.reject(new S5vecError(e.message ?? "error", { code: e.code, field: e.field ?? null, body: frame }));
      } else if (frame.type === "subscribed") {
        // registered here, synchronously, so no pushed frame can slip past it
        const sub = new Subscription(this, frame);
        this.subscriptions.set(sub.sub, sub);
        for (const early of this.early.get(sub.sub) ?? []) this._deliver(sub, early);
        this.early.delete(sub.sub);
        waiting.resolve(sub);
      } else {
        waiting.resolve(frame.type === "result" ? frame.result : frame);
      }
      return;
    }
    if (frame.sub != null && ["events", "matches", "lagged", "missed", "ahead"].includes(frame.type)) {
      const sub = this.subscriptions.get(frame.sub);
      if (sub) this._deliver(sub, frame);
      else if (!this.early.has(frame.sub)) this.early.set(frame.sub, [frame]);
      else this.early.get(frame.sub)?.push(frame);
    }
  }

  _deliver(sub, frame) {
    if (frame.type === "events") for (const event of frame.events) sub._push(event);
    else if (frame.type === "matches") for (const match of frame.matches) sub._push(match);
    else sub._push({ type: frame.type, notice: true, ...frame });
  }

  _closed(code, reason) {
    this.closeCode = code;
    const error = new S5vecError(`websocket closed (${code}${reason ? `: ${reason}` : ""})`, { code: "connection_closed", status: null });
    for (const { reject, timer } of this.pending.values()) { clearTimeout(timer); reject(error); }
    this.pending.clear();
    for (const sub of this.subscriptions.values()) sub._end(code === 1000 ? null : error);
    this.subscriptions.clear();
  }

  /** Send `{type, id, ...fields}`; resolves with the reply's `result` (or the reply frame). */
  request(type, fields = {}) {
    if (!this.isOpen) return Promise.reject(new S5vecError("websocket is not open", { code: "connection_closed" }));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new S5vecError(`no reply to ${type} within ${this.timeoutMs} ms`, { code: "timeout" }));
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(toJSON({ ...fields, type, id }));
    });
  }

  upsert(collection, record) { return this.request("upsert", { collection, record }); }
  upsertBatch(collection, records) { return this.request("upsert_batch", { collection, records }); }
  delete(collection, target) {
    return this.request("delete", { collection, ...(Array.isArray(target) ? { ids: target.map(String) } : target) });
  }
  get(collection, ids, { includeVector = false } = {}) {
    return this.request("get", { collection, ids: (Array.isArray(ids) ? ids : [ids]).map(String), include_vector: includeVector });
  }
  /**
   * @param {string} collection @param {ArrayLike<number> | null} vector
   * @param {import("./index.d.ts").SearchParams} [params]
   */
  search(collection, vector, { k = 10, filter, options, text } = {}) {
    return this.request("search", compact({ collection, vector: vector ?? undefined, text, k, filter, options }));
  }
  ping() { return this.request("ping"); }

  /**
   * Change feed: events (`{type, lsn, collection, record}`) and notices.
   * @param {import("./index.d.ts").SubscribeOptions} [options]
   * @returns {Promise<Subscription>}
   */
  subscribe({ collections, filter, types, since, includeVector, sub } = {}) {
    return this.request("subscribe", compact({ collections, filter, types, since, include_vector: includeVector, sub }));
  }

  /**
   * Standing query: `results` holds the current top k; iterates `{score, event}` matches.
   * @param {string} collection @param {ArrayLike<number>} vector
   * @param {import("./index.d.ts").SubscribeQueryOptions} [options]
   * @returns {Promise<Subscription>}
   */
  subscribeQuery(collection, vector, { k, scoreThreshold, filter, includeVector, sub } = {}) {
    return this.request("subscribe_query", compact({ collection, vector, k, score_threshold: scoreThreshold, filter,
      include_vector: includeVector, sub }));
  }

  /** Close the socket; subscriptions end. */
  close(code = 1000, reason = "") {
    return new Promise((resolve) => {
      if (this.ws.readyState === 3) return resolve(undefined);
      const previous = this.ws.onclose;
      this.ws.onclose = (event) => { previous?.call(this.ws, event); resolve(undefined); };
      this.ws.close(code, reason);
    });
  }
}
