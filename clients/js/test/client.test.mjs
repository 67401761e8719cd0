// The JavaScript client against a real daemon (started here), plus unit tests of the
// retry policy and the SSE parser with a fake fetch. Run: node --experimental-websocket --test
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { S5vecClient, S5vecError } from "s5vec-client";
import { REPO, startDaemon } from "./daemon.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const EXAMPLE = join(HERE, "..", "examples", "readme.mjs");
const run = promisify(execFile);

/** Collect from an async iterator until `stop(item)` (inclusive) or `ms` pass; then end
 * the iterator (`keep`: leave it open, e.g. a subscription to read on). */
async function take(iterable, stop, ms = 10_000, keep = false) {
  const seen = [];
  const iterator = iterable[Symbol.asyncIterator]();
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out; saw ${JSON.stringify(seen)}`)), ms); });
  try {
    while (true) {
      const { value, done } = await Promise.race([iterator.next(), timeout]);
      if (done) return seen;
      seen.push(value);
      if (stop(value)) return seen;
    }
  } finally {
    clearTimeout(timer);
    if (!keep) await iterator.return?.();
  }
}

/** A port nothing listens on. */
function closedPort() {
  return new Promise((ok) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

async function rejects(promise, status, code, field) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof S5vecError, `not an S5vecError: ${error}`);
    assert.equal(error.status, status, error.message);
    assert.equal(error.code, code, error.message);
    if (field !== undefined) assert.equal(error.field, field);
    return true;
  });
}

describe("against a daemon", () => {
  let daemon;
  let client;

  before(async () => {
    daemon = await startDaemon();
    client = new S5vecClient({ url: daemon.url, retryBaseMs: 10 });
  });

  after(async () => {
    assert.equal(await daemon.close(), 0, "the daemon exits 0 on SIGTERM");
  });

  test("the docs' example (docs/clients.md) is this file, and it runs", async () => {
    const readme = readFileSync(join(REPO, "docs", "clients.md"), "utf8");
    const blocks = [...readme.matchAll(/```js title="js-client-example"\n([\s\S]*?)```/g)].map((m) => m[1]);
    assert.equal(blocks.length, 1, "one js-client-example block in docs/clients.md");
    assert.equal(blocks[0], readFileSync(EXAMPLE, "utf8"), "docs/clients.md block == clients/js/examples/readme.mjs");
    const { stdout } = await run(process.execPath, ["--experimental-websocket", EXAMPLE],
      { env: { ...process.env, S5VEC_URL: daemon.url }, timeout: 60_000 });
    assert.match(stdout, /^2 dimension_mismatch\n\[ 'intro', 'blue' \]\n404 record_not_found\nvector_added late\nresume later with lastEventId \d+\n$/);
  });

  test("collections: create (idempotent), list, get, drop", async () => {
    const created = await client.createCollection("c1", { dimension: 3, metric: "l2" });
    assert.equal(created.name, "c1");
    assert.equal(created.dimension, 3);
    await client.createCollection("c1", { dimension: 3, metric: "l2" }); // identical: fine
    await rejects(client.createCollection("c1", { dimension: 4, metric: "l2" }), 409, "collection_exists");
    assert.ok((await client.listCollections()).some((c) => c.name === "c1"));
    assert.equal((await client.getCollection("c1")).count, 0);
    assert.deepEqual(await client.dropCollection("c1"), { deleted: "c1" });
    await rejects(client.getCollection("c1"), 404, "collection_not_found");
  });

  test("records: upsert, batch, get, patch, find, search, delete", async () => {
    await client.createCollection("r", { dimension: 2, metric: "l2", payload_indexes: { kind: "keyword" } });
    assert.deepEqual(await client.upsert("r", { id: "a", vector: [0, 0], metadata: { kind: "x", n: 1 } }),
      { id: "a", status: "upserted" });
    const batch = await client.upsertBatch("r", [
      { id: "b", vector: [1, 0], metadata: { kind: "x", n: 2 } },
      { id: "c", vector: [5, 5], metadata: { kind: "y", n: 3 } },
      { id: 7, vector: [2, 2] },
      { id: "bad", vector: [1, 2, 3] },
    ]);
    assert.equal(batch.successful, 3);
    assert.equal(batch.failed, 1);
    assert.deepEqual([batch.errors[0].index, batch.errors[0].id, batch.errors[0].error.code], [3, "bad", "dimension_mismatch"]);

    const a = await client.get("r", "a");
    assert.deepEqual([a.id, a.vector, a.metadata], ["a", [0, 0], { kind: "x", n: 1 }]);
    assert.equal((await client.get("r", 7, { includeVector: false })).vector ?? null, null);
    await client.updateMetadata("r", "a", { kind: "y", n: 10 });
    assert.deepEqual((await client.get("r", "a")).metadata, { kind: "y", n: 10 });

    const found = await client.find("r", { kind: "y" }, { limit: 1 });
    assert.equal(found.total, 2);
    assert.equal(found.count, 1);

    const hits = await client.search("r", new Float32Array([0.9, 0]), { k: 2, options: { include_vector: true } });
    assert.deepEqual(hits.results.map((h) => h.id), ["b", "a"]);
    assert.deepEqual(hits.results[0].vector, [1, 0]);
    const filtered = await client.search("r", [0, 0], { k: 5, filter: { n: { $gte: 3 } } });
    assert.deepEqual(filtered.results.map((h) => h.id), ["a", "c"]); // a has n 10 now

    assert.deepEqual(await client.delete("r", ["a", "missing"]), { deleted: 1 });
    assert.deepEqual(await client.delete("r", { filter: { kind: "y" } }), { deleted: 1 });
    assert.equal((await client.getCollection("r")).count, 2);
  });

  test("ingest (array, string and streamed async iterable) and export", async () => {
    await client.createCollection("ing", { dimension: 2 });
    const report = await client.ingest("ing", [{ id: "i0", vector: [1, 0] }, '{"id": "i1", "vector": [0, 1]}', { id: "x", vector: [1] }]);
    assert.deepEqual([report.lines, report.successful, report.failed, report.errors[0].line], [3, 2, 1, 3]);
    await client.ingest("ing", '{"id": "i2", "vector": [1, 1]}\n');
    async function* many() {
      for (let i = 0; i < 2500; i++) yield { id: `s${String(i).padStart(4, "0")}`, vector: [1, i], metadata: { i } };
    }
    const streamed = await client.ingest("ing", many());
    assert.deepEqual([streamed.successful, streamed.failed], [2500, 0]);
    const ids = [];
    for await (const record of client.export("ing", { includeVector: false })) ids.push(record.id);
    assert.equal(ids.length, 2503);
    assert.deepEqual(ids.slice(0, 4), ["i0", "i1", "i2", "s0000"]);
    const rest = [];
    for await (const record of client.export("ing", { after: "s2497" })) rest.push(record);
    assert.deepEqual(rest.map((r) => r.id), ["s2498", "s2499"]);
    assert.deepEqual(rest[0].vector.length, 2);
  });

  test("errors carry status, code and field", async () => {
    await client.createCollection("e", { dimension: 2 });
    await rejects(client.get("e", "nope"), 404, "record_not_found");
    await rejects(client.search("nope", [1, 0]), 404, "collection_not_found");
    await rejects(client.search("e", [1, 0, 0]), 422, "dimension_mismatch");
    await rejects(client.upsert("e", { id: "x", vector: [1, 0], metadata: "not an object" }), 400, "invalid_request", "metadata");
    await rejects(client.find("e", { n: { $bogus: 1 } }), 400, "invalid_request");
    let attempts = 0;
    const counting = (url, init) => { attempts++; return fetch(url, init); };
    const offline = new S5vecClient({ url: `http://127.0.0.1:${await closedPort()}`, retries: 2, retryBaseMs: 1, fetch: counting });
    await rejects(offline.dropCollection("x"), null, "connection_failed");
    assert.equal(attempts, 3, "refused connections are retried, even for calls not safe to repeat");
  });

  test("admin statistics, checkpoint, health", async () => {
    const stats = await client.statistics();
    assert.ok(stats.collections.e || stats.collections.r);
    assert.equal(typeof stats.applied_lsn, "number");
    await client.checkpoint();
    assert.equal((await client.health()).status, "ok");
    assert.deepEqual(await client.ready(), { ready: true });
  });

  test("websocket: requests matched by id, errors, a subscription sees an upsert", async () => {
    await client.createCollection("live", { dimension: 2, metric: "l2" });
    const ws = await client.ws();
    try {
      const feed = await ws.subscribe({ collections: ["live"] });
      assert.equal(typeof feed.sub, "string");
      assert.equal(typeof feed.lsn, "number");
      await client.upsert("live", { id: "rest-1", vector: [1, 1], metadata: { via: "rest" } }); // written over REST
      const [event] = await take(feed, () => true, 10_000, true);
      assert.equal(event.type, "vector_added");
      assert.equal(event.collection, "live");
      assert.deepEqual(event.record.metadata, { via: "rest" });

      // many requests at once: the replies come back in any order and find their callers
      const replies = await Promise.all(Array.from({ length: 30 }, (_, i) =>
        i % 2 ? ws.upsert("live", { id: `w${i}`, vector: [i, 0] }) : ws.get("live", ["rest-1"])));
      replies.forEach((reply, i) => {
        if (i % 2) assert.deepEqual(reply, { id: `w${i}`, status: "upserted" });
        else assert.deepEqual(reply.records.map((r) => r.id), ["rest-1"]);
      });
      const seen = await take(feed, (e) => e.record?.id === "w29", 10_000, true);
      assert.deepEqual(seen.map((e) => e.record.id), Array.from({ length: 15 }, (_, i) => `w${2 * i + 1}`));

      const hits = await ws.search("live", [1, 0.9], { k: 1 });
      assert.deepEqual(hits.results.map((h) => h.id), ["rest-1"]);
      assert.equal(typeof (await ws.ping()).lsn, "number");
      const batch = await ws.upsertBatch("live", [{ id: "b1", vector: [3, 3] }, { id: "b2", vector: [3] }]);
      assert.deepEqual([batch.successful, batch.failed, batch.errors[0].index, batch.errors[0].error.code],
        [1, 1, 1, "dimension_mismatch"]);
      assert.deepEqual(await ws.delete("live", ["b1"]), { deleted: 1 });
      await rejects(ws.search("nope", [1, 0]), null, "collection_not_found");
      await rejects(ws.subscribe({ sub: feed.sub }), null, "subscription_exists", "sub");

      // a standing query: the current top 2, then each record that enters it
      const near = await ws.subscribeQuery("live", [100, 100], { k: 2 });
      assert.equal(near.results.length, 2);
      await ws.upsert("live", { id: "far", vector: [-50, -50] });
      await ws.upsert("live", { id: "close", vector: [99, 99] });
      const [match] = await take(near, () => true);
      assert.equal(match.event.record.id, "close");
      assert.ok(match.score > 0);
      await near.close();
      await feed.close();
    } finally {
      await ws.close();
    }
    await rejects(ws.ping(), null, "connection_closed");
  });

  test("an injected WebSocket constructor is used", async () => {
    let made = 0;
    const Injected = class extends globalThis.WebSocket {
      constructor(url) { super(url); made++; }
    };
    const ws = await new S5vecClient({ url: daemon.url, WebSocket: Injected }).ws();
    assert.equal(typeof (await ws.ping()).lsn, "number");
    await ws.close();
    assert.equal(made, 1);
  });

  test("server-sent events: replay, filter by type, resume with Last-Event-ID", async () => {
    await client.createCollection("sse", { dimension: 2 });
    for (const id of ["a", "b", "c"]) await client.upsert("sse", { id, vector: [1, 0] });
    await client.delete("sse", ["a"]);

    const types = ["vector_added", "vector_deleted"]; // not the checkpoint events of other tests
    const first = client.updates({ collections: ["sse"], types, lastEventId: 0 });
    const [a] = await take(first, () => true);
    assert.deepEqual([a.type, a.data.record.id, a.data.collection], ["vector_added", "a", "sse"]);
    assert.equal(first.lastEventId, String(a.data.lsn));

    const resumed = client.updates({ collections: ["sse"], types, lastEventId: first.lastEventId });
    const rest = await take(resumed, (e) => e.type === "vector_deleted");
    assert.deepEqual(rest.map((e) => [e.type, e.data.record.id]),
      [["vector_added", "b"], ["vector_added", "c"], ["vector_deleted", "a"]]);

    const deletes = client.updates({ collections: ["sse"], types: ["vector_deleted"], lastEventId: 0 });
    const [deleted] = await take(deletes, () => true);
    assert.equal(deleted.data.record.id, "a");

    // live: an event written after the stream opened
    const live = client.updates({ collections: ["sse"], types });
    const iterator = live[Symbol.asyncIterator]();
    const next = iterator.next();
    await new Promise((r) => setTimeout(r, 200));
    await client.upsert("sse", { id: "d", vector: [0, 1] });
    const { value } = await next;
    assert.equal(value.data.record.id, "d");
    await iterator.return();

    await assert.rejects(take(client.updates({ collections: ["nope"] }), () => true),
      (e) => e instanceof S5vecError && e.status === 404 && e.code === "collection_not_found");
  });
});

describe("across a daemon restart", () => {
  let daemon;

  before(async () => { daemon = await startDaemon(); });
  after(async () => { await daemon.close(); });

  test("the SSE feed reconnects with Last-Event-ID; a WebSocket reports the close", async () => {
    const client = new S5vecClient({ url: daemon.url, retryBaseMs: 20 });
    await client.createCollection("rs", { dimension: 2 });
    await client.upsert("rs", { id: "before", vector: [1, 0] });
    const feed = client.updates({ collections: ["rs"], types: ["vector_added"], lastEventId: 0, retryMs: 100, maxRetryMs: 500 });
    const events = feed[Symbol.asyncIterator]();
    const first = await events.next();
    assert.equal(first.value.data.record.id, "before");
    const position = feed.lastEventId;

    const ws = await client.ws();
    const sub = await ws.subscribe({ collections: ["rs"] });
    const stopped = daemon.stop();
    await assert.rejects(sub.next(), (e) => e instanceof S5vecError && e.code === "connection_closed");
    assert.equal(ws.closeCode, 1001, "going away");
    await rejects(ws.ping(), null, "connection_closed");
    assert.equal(await stopped, 0);

    await daemon.restart();
    await client.upsert("rs", { id: "after", vector: [0, 1] });
    const seen = [];
    while (true) {
      const { value } = await Promise.race([events.next(), new Promise((_, no) => setTimeout(() => no(new Error(JSON.stringify(seen))), 15_000))]);
      seen.push([value.type, value.data.record?.id ?? null]);
      if (value.data.record?.id === "after") break;
    }
    // the daemon said goodbye, the feed came back after `before` (not replayed) and got `after`
    assert.deepEqual(seen, [["going_away", null], ["vector_added", "after"]]);
    assert.ok(Number(feed.lastEventId) > Number(position));
    await events.return();
  });
});

describe("with API keys", () => {
  let daemon;

  before(async () => {
    daemon = await startDaemon({ env: { S5VEC_API_KEYS: "reader-key-0000000001:read;writer-key-0000000001:write" } });
  });

  after(async () => { await daemon.close(); });

  test("REST sends the key as a bearer token; scopes are enforced", async () => {
    await rejects(new S5vecClient({ url: daemon.url }).listCollections(), 401, "unauthorized");
    const writer = new S5vecClient({ url: daemon.url, apiKey: "writer-key-0000000001" });
    await writer.createCollection("k", { dimension: 2 });
    await writer.upsert("k", { id: "a", vector: [1, 0] });
    const reader = new S5vecClient({ url: daemon.url, apiKey: "reader-key-0000000001" });
    assert.equal((await reader.get("k", "a")).id, "a");
    await rejects(reader.upsert("k", { id: "b", vector: [1, 0] }), 403, "forbidden");
  });

  test("the WebSocket authenticates with a first auth message", async () => {
    const reader = await new S5vecClient({ url: daemon.url, apiKey: "reader-key-0000000001" }).ws();
    try {
      assert.equal((await reader.get("k", ["a"])).records[0].id, "a");
      await rejects(reader.upsert("k", { id: "b", vector: [1, 0] }), null, "forbidden");
    } finally {
      await reader.close();
    }
    await assert.rejects(new S5vecClient({ url: daemon.url, apiKey: "wrong" }).ws(),
      (e) => e instanceof S5vecError && e.code === "unauthorized");
  });
});

describe("without a daemon (fake fetch)", () => {
  const json = (status, body, headers = {}) =>
    new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });

  test("idempotent calls retry 429/502/503/504 with backoff; others do not", async () => {
    const calls = [];
    const fake = async (url, init) => {
      calls.push(init.method);
      return calls.length < 3 ? json(503, { error: { code: "storage_unavailable", message: "busy" } }) : json(200, { ok: 1 });
    };
    const client = new S5vecClient({ url: "http://x", fetch: fake, retryBaseMs: 1 });
    assert.deepEqual(await client.search("c", [1]), { ok: 1 });
    assert.equal(calls.length, 3);

    calls.length = 0;
    await rejects(client.dropCollection("c"), 503, "storage_unavailable");
    assert.equal(calls.length, 1);
    calls.length = 0;
    await rejects(client.delete("c", { filter: { a: 1 } }), 503, "storage_unavailable");
    assert.equal(calls.length, 1);

    const never = new S5vecClient({ url: "http://x", fetch: fake, retries: 0 });
    calls.length = 0;
    await rejects(never.getCollection("c"), 503, "storage_unavailable");
    assert.equal(calls.length, 1);
  });

  test("the SSE parser handles split chunks, CRLF, comments and multi-line data, and reconnects", async () => {
    const encoder = new TextEncoder();
    const seenHeaders = [];
    const bodies = [
      [": hello\r\n\r\nevent: vector_added\r\nid: 5\r\ndata: {\"record\"", ": {\"id\": \"a\"}}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\n"],
      ["event: vector_deleted\nid: 7\ndata: {\"record\": {\"id\": \"a\"}}\n\n"],
    ];
    const fake = async (url, init) => {
      seenHeaders.push(init.headers["Last-Event-ID"] ?? null);
      const chunks = bodies.shift() ?? [];
      return new Response(new ReadableStream({
        start(controller) {
          for (const c of chunks) controller.enqueue(encoder.encode(c));
          controller.close();
        },
      }), { status: 200, headers: { "Content-Type": "text/event-stream" } });
    };
    const feed = new S5vecClient({ url: "http://x", fetch: fake }).updates({ retryMs: 1 });
    const events = await take(feed, (e) => e.type === "vector_deleted");
    assert.deepEqual(events, [
      { type: "vector_added", id: "5", data: { record: { id: "a" } } },
      { type: "x", id: "5", data: "line1\nline2" },
      { type: "vector_deleted", id: "7", data: { record: { id: "a" } } },
    ]);
    assert.deepEqual(seenHeaders, [null, "5"]); // the second connection resumed after id 5
    assert.equal(feed.lastEventId, "7");
  });
});
