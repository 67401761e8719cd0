import { S5vecClient, S5vecError } from "s5vec-client";

const client = new S5vecClient({ url: process.env.S5VEC_URL ?? "http://127.0.0.1:7533" });

await client.createCollection("songs", { dimension: 3, metric: "cosine", payload_indexes: { genre: "keyword" } });
await client.upsert("songs", { id: "intro", vector: [1, 0, 0], metadata: { genre: "jazz", year: 1959 } });
const batch = await client.upsertBatch("songs", [
  { id: "blue", vector: [0.9, 0.1, 0], metadata: { genre: "jazz", year: 1961 } },
  { id: "loud", vector: [0, 0, 1], metadata: { genre: "rock", year: 1971 } },
  { id: "short", vector: [1, 0] }, // the wrong length: rejected on its own
]);
console.log(batch.successful, batch.errors[0].error.code); // 2 dimension_mismatch

const { results } = await client.search("songs", [1, 0.05, 0], { k: 2, filter: { genre: "jazz" } });
console.log(results.map((hit) => hit.id)); // [ 'intro', 'blue' ]

try {
  await client.get("songs", "nope");
} catch (error) {
  if (!(error instanceof S5vecError)) throw error;
  console.log(error.status, error.code); // 404 record_not_found
}

// live: a WebSocket subscription sees writes as they happen (Node 20: --experimental-websocket)
const ws = await client.ws();
const feed = await ws.subscribe({ collections: ["songs"], types: ["vector_added"] });
await ws.upsert("songs", { id: "late", vector: [0, 1, 0], metadata: { genre: "rock" } });
for await (const event of feed) {
  console.log(event.type, event.record.id); // vector_added late
  break;
}
await ws.close();

// the same change feed over server-sent events, from the start of the retained window
const updates = client.updates({ collections: ["songs"], lastEventId: 0 });
for await (const event of updates) {
  if (event.type === "vector_added" && event.data.record.id === "late") break;
}
console.log("resume later with lastEventId", updates.lastEventId);
