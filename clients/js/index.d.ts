// Types of the s5vec JavaScript client (index.js). Hand-written: the client has no build step.

export declare const DEFAULT_URL: string;

export type Metric = "cosine" | "l2" | "ip";
export type Vector = number[] | Float32Array | Float64Array;
export type Metadata = Record<string, unknown>;
/** A Mongo-style metadata filter: `$eq $ne $gt $gte $lt $lte $in $nin $exists $and $or $not`. */
export type Filter = Record<string, unknown>;
export type EventType =
  | "vector_added" | "vector_updated" | "vector_deleted" | "migration_started"
  | "migration_completed" | "checkpoint_completed" | "backup_completed";

/** A WebSocket constructor: the platform's, or e.g. the `ws` package's. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface ClientOptions {
  /** Default `$S5VEC_URL` (Node), else `http://127.0.0.1:7533`. */
  url?: string;
  /** Sent as `Authorization: Bearer <key>` (and as a first `auth` message on WebSockets). Default `$S5VEC_API_KEY` (Node). */
  apiKey?: string | null;
  /** Per request (not for streams), default 30,000. */
  timeoutMs?: number;
  /** Retries of calls safe to repeat, default 3; 0 turns them off. */
  retries?: number;
  /** Backoff: full jitter over `retryBaseMs * 2^attempt` (100), at most `retryMaxMs` (5,000). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Default `globalThis.WebSocket` (Node 20: only with `--experimental-websocket`). */
  WebSocket?: WebSocketConstructor;
}

export interface ErrorInfo {
  status?: number | null;
  code?: string;
  field?: string | null;
  body?: unknown;
  cause?: unknown;
}

/** Every failure. `status` is null when no answer came (and for WebSocket replies). */
export declare class S5vecError extends Error {
  constructor(message: string, info?: ErrorInfo);
  readonly status: number | null;
  /** The server's error code (`collection_not_found`, `dimension_mismatch`, ...), or
   * `connection_failed`, `timeout`, `connection_closed`, `unsupported`. */
  readonly code: string;
  readonly field: string | null;
  readonly body: unknown;
}

export interface CollectionOptions {
  dimension: number;
  metric?: Metric;
  schema?: "video_nft";
  hnsw?: { m?: number; ef_construction?: number; ef_search?: number };
  ivf?: { quantizer?: "sq8" | "pq" | "flat"; nlist?: number; nprobe?: number; rerank?: number };
  recent_threshold_s?: number;
  window_s?: number;
  segment_records?: number;
  payload_indexes?: Record<string, "keyword" | "number" | "datetime" | "bool">;
  embedding_model?: string;
}

/** Collection statistics (`count`, `indexed`, `pending`, ...). */
export interface CollectionInfo {
  name: string;
  dimension: number;
  metric: Metric;
  count: number;
  [key: string]: unknown;
}

export interface RecordIn {
  id: string | number;
  vector?: Vector;
  /** Instead of `vector`, on a collection with an `embedding_model`. */
  text?: string;
  metadata?: Metadata;
  /** ISO 8601 or Unix seconds (default: ingest time). */
  timestamp?: string | number;
}

export interface StoredRecord {
  id: string;
  metadata: Metadata;
  timestamp: number;
  vector?: number[] | null;
}

export interface ItemError {
  index: number;
  id: string | null;
  error: { code: string; message: string };
}

export interface BatchResult {
  successful: number;
  failed: number;
  errors: ItemError[];
}

export interface IngestResult {
  lines: number;
  successful: number;
  failed: number;
  batches: number;
  errors: { line: number; id: string | null; error: { code: string; message: string } }[];
  errors_truncated: boolean;
}

export interface RecordsPage {
  records: StoredRecord[];
  count: number;
  total: number;
}

/** The REST search options, as sent. */
export interface SearchOptionsBody {
  hnsw_ef?: number;
  ivf_nprobe?: number;
  include_metadata?: boolean;
  include_vector?: boolean;
  score_threshold?: number;
  search_recent?: boolean;
  search_historical?: boolean;
  timeout_ms?: number;
  merge_strategy?: "take_best" | "average" | "weighted";
  tier_weights?: number[];
  scoring?: Record<string, unknown>;
}

export interface SearchParams {
  k?: number;
  filter?: Filter;
  options?: SearchOptionsBody;
  /** With `vector` null: the daemon embeds this text. */
  text?: string;
}

export interface SearchHit {
  id: string;
  distance: number;
  score: number;
  metadata?: Metadata | null;
  vector?: number[] | null;
}

export interface SearchResponse {
  results: SearchHit[];
  count: number;
  search_time_ms: number;
  partial?: boolean;
  cached?: boolean;
}

/** A change-feed event (`data` of an SSE event, or an item of a WebSocket subscription). */
export interface ChangeEvent {
  type: EventType;
  lsn: number;
  collection?: string;
  record?: { id: string; metadata?: Metadata; timestamp?: number; vector?: number[] };
  /** Job events. */
  data?: Record<string, unknown>;
  /** A job event's own event id, `"<lsn>.<n>"`: pass it as `since` to resume right after it. */
  id?: string;
}

export interface Notice {
  type: "lagged" | "missed" | "ahead";
  notice: true;
  sub: string;
  /** The notice's fields (`resume_from`, `missed`, ...). */
  [key: string]: any;
}

export interface Match {
  score: number;
  event: ChangeEvent;
}

export interface UpdatesOptions {
  collections?: string[];
  types?: EventType[];
  filter?: Filter;
  includeVector?: boolean;
  /** Resume after this event id (an LSN, or `"<lsn>.<n>"` for a job event); 0 replays the retained window. */
  lastEventId?: string | number | null;
  signal?: AbortSignal;
  /** First reconnection delay (ms, default 500; the server's `retry:` overrides), doubling up to `maxRetryMs` (10,000). */
  retryMs?: number;
  maxRetryMs?: number;
}

/** One server-sent event: its `event:` name, the last `id:` seen, and `data` parsed as JSON. */
export interface ServerEvent {
  type: EventType | "lagged" | "missed" | "ahead" | "disconnected" | "going_away" | string;
  id: string | null;
  data: any;
}

export declare class EventFeed implements AsyncIterable<ServerEvent> {
  /** Where the feed stands: pass it as `lastEventId` to a later `updates()` to resume. */
  readonly lastEventId: string | null;
  close(): void;
  [Symbol.asyncIterator](): AsyncIterator<ServerEvent>;
}

export interface SubscribeOptions {
  collections?: string[];
  filter?: Filter;
  types?: EventType[];
  /** Replay from the first change after this event id (an LSN, or a job event's `"<lsn>.<n>"`). */
  since?: number | string;
  includeVector?: boolean;
  /** A name for the subscription (default: chosen by the server). */
  sub?: string;
}

export interface SubscribeQueryOptions {
  k?: number;
  scoreThreshold?: number;
  filter?: Filter;
  includeVector?: boolean;
  sub?: string;
}

export declare class Subscription<T> implements AsyncIterableIterator<T | Notice> {
  readonly sub: string;
  /** The server's position when it subscribed. */
  readonly lsn: number;
  /** The event id delivery starts after (`since` to resume from the very start). */
  readonly since: string;
  /** A standing query's current top k when it subscribed (null for change feeds). */
  readonly results: SearchHit[] | null;
  next(): Promise<IteratorResult<T | Notice>>;
  return(): Promise<IteratorResult<T | Notice>>;
  [Symbol.asyncIterator](): this;
  /** Unsubscribe (idempotent). */
  close(): Promise<void>;
}

export declare class S5vecSocket {
  readonly url: string;
  readonly isOpen: boolean;
  /** The close code once closed (1001: the daemon stops; 4008: this client fell too far behind). */
  readonly closeCode: number | null;
  /** Any request frame; resolves with `result` of the reply (or the whole reply frame). */
  request(type: string, fields?: Record<string, unknown>): Promise<any>;
  upsert(collection: string, record: RecordIn): Promise<{ id: string; status: "upserted" }>;
  upsertBatch(collection: string, records: RecordIn[]): Promise<BatchResult>;
  delete(collection: string, target: (string | number)[] | { filter: Filter }): Promise<{ deleted: number }>;
  get(collection: string, ids: string | number | (string | number)[], options?: { includeVector?: boolean }):
    Promise<{ records: StoredRecord[]; missing: string[] }>;
  search(collection: string, vector: Vector | null, params?: SearchParams): Promise<SearchResponse>;
  ping(): Promise<{ type: "pong"; id: number; lsn: number }>;
  subscribe(options?: SubscribeOptions): Promise<Subscription<ChangeEvent>>;
  subscribeQuery(collection: string, vector: Vector, options?: SubscribeQueryOptions): Promise<Subscription<Match>>;
  close(code?: number, reason?: string): Promise<void>;
}

export declare class S5vecClient {
  constructor(options?: ClientOptions);
  readonly url: string;
  readonly apiKey: string | null;

  /** A raw REST call (JSON in and out, typed errors, retries when `idempotent`). */
  request(method: string, path: string, options?: {
    body?: unknown; raw?: BodyInit; query?: Record<string, unknown>; idempotent?: boolean;
    contentType?: string; stream?: boolean; signal?: AbortSignal; headers?: Record<string, string>;
  }): Promise<any>;

  health(): Promise<{ status: "ok" | "degraded" | "starting"; [key: string]: unknown }>;
  ready(): Promise<{ ready: boolean }>;

  listCollections(): Promise<CollectionInfo[]>;
  createCollection(name: string, options: CollectionOptions): Promise<CollectionInfo>;
  getCollection(name: string): Promise<CollectionInfo>;
  dropCollection(name: string): Promise<{ deleted: string }>;

  upsert(collection: string, record: RecordIn): Promise<{ id: string; status: "upserted" }>;
  upsertBatch(collection: string, records: RecordIn[]): Promise<BatchResult>;
  get(collection: string, id: string | number, options?: { includeVector?: boolean }): Promise<StoredRecord>;
  updateMetadata(collection: string, id: string | number, metadata: Metadata,
                 options?: { merge?: boolean }): Promise<{ id: string; status: "updated" }>;
  /** By ids (an array) or `{filter}`; `deleted` counts the records that existed. */
  delete(collection: string, target: (string | number)[] | { filter: Filter }): Promise<{ deleted: number }>;
  find(collection: string, filter?: Filter | null, options?: { limit?: number; offset?: number; includeVector?: boolean }):
    Promise<RecordsPage>;
  search(collection: string, vector: Vector | null, params?: SearchParams): Promise<SearchResponse>;
  ingest(collection: string,
         records: string | Uint8Array | (RecordIn | string)[] | Iterable<RecordIn | string> | AsyncIterable<RecordIn | string>):
    Promise<IngestResult>;
  export(collection: string, options?: { includeVector?: boolean; after?: string; signal?: AbortSignal }):
    AsyncGenerator<StoredRecord, void, undefined>;

  statistics(): Promise<Record<string, any>>;
  checkpoint(): Promise<Record<string, any>>;

  ws(): Promise<S5vecSocket>;
  updates(options?: UpdatesOptions): EventFeed;
}
