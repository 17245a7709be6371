/**
 * A thin typed client for agents-api: openapi-fetch over the types that openapi-typescript
 * generates from the API's OpenAPI document (./schema.ts, never edited by hand), plus
 * what most callers need: a bearer token on every request, problem+json errors as a typed
 * `ProblemError`, cursor pagination, knowledge uploads, following a job to its end and
 * the org's live events (server-sent events over fetch).
 *
 * Every helper is a plain function over the openapi-fetch client, so `client.GET(…)` and
 * friends stay available, typed from `paths`, for everything else.
 */
import createFetchClient from "openapi-fetch";
import type { Client, HeadersOptions, Middleware } from "openapi-fetch";

import type { components, paths } from "./schema.js";

export type { components, paths } from "./schema.js";
export type { Client, Middleware } from "openapi-fetch";

/** The API's schemas by name: `Schemas["Agent"]`, `Schemas["Job"]`, … */
export type Schemas = components["schemas"];
export type Agent = Schemas["Agent"];
export type Asset = Schemas["Asset"];
export type Job = Schemas["Job"];
export type JobStatus = Schemas["JobStatus"];
export type Uploaded = Schemas["Uploaded"];
/** An RFC 9457 problem document, as every error of the API is sent. */
export type Problem = Schemas["Problem"];
/** One field of a 422 `validation_failed` problem: `{field, message}`. */
export type FieldError = Schemas["FieldError"];

/** The client: openapi-fetch's, typed with the API's `paths`. */
export type AgentsApiClient = Client<paths>;

/** Gives the access token for a request; `null`/`undefined` sends none. */
export type TokenSource = () => string | null | undefined | Promise<string | null | undefined>;

/** Either a fixed `token`, or `getToken` called before every request (to refresh), or neither. */
export type Credentials =
  | { token: string; getToken?: never }
  | { getToken: TokenSource; token?: never }
  | { token?: undefined; getToken?: undefined };

export type ClientConfig = Credentials & {
  /** The API's origin, e.g. `https://api.example.com` (paths start with `/v1/…`). */
  baseUrl: string;
  /** Headers sent with every request. */
  headers?: HeadersOptions;
  /** A fetch of your own (tests, proxies); `globalThis.fetch` by default. */
  fetch?: (input: Request) => Promise<Response>;
};

/** A client that sends `Authorization: Bearer <token>` with every request. */
export function createClient(config: ClientConfig): AgentsApiClient {
  const { baseUrl, headers, fetch, token, getToken } = config;
  const client = createFetchClient<paths>({
    baseUrl,
    ...(headers === undefined ? {} : { headers }),
    ...(fetch === undefined ? {} : { fetch }),
  });
  const source: TokenSource | undefined =
    getToken ?? (token === undefined ? undefined : () => token);
  if (source) client.use(bearer(source));
  return client;
}

function bearer(getToken: TokenSource): Middleware {
  return {
    async onRequest({ request }) {
      const token = await getToken();
      if (token) request.headers.set("Authorization", `Bearer ${token}`);
      return request;
    },
  };
}

// ---------------------------------------------------------------------------------------
// Problems

/** The `code`s the API sends (`src/http/error.rs`), plus `unexpected_response`, which this
 * client makes up when an error answer is not a problem document (a proxy's HTML page). */
export const PROBLEM_CODES = [
  "bad_request",
  "unauthorized",
  "forbidden",
  "not_found",
  "method_not_allowed",
  "conflict",
  "ai_provider_not_configured",
  "payload_too_large",
  "request_timeout",
  "unsupported_media_type",
  "validation_failed",
  "rate_limited",
  "internal",
  "unavailable",
  "timeout",
  "unexpected_response",
] as const;
export type ProblemCode = (typeof PROBLEM_CODES)[number];

/** Whether `value` has the shape of a problem document. */
export function isProblem(value: unknown): value is Problem {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v["type"] === "string" &&
    typeof v["title"] === "string" &&
    typeof v["status"] === "number" &&
    typeof v["detail"] === "string" &&
    typeof v["code"] === "string"
  );
}

/** An error answer of the API, with its problem document. */
export class ProblemError extends Error {
  override readonly name = "ProblemError";
  readonly problem: Problem;
  readonly response: Response;

  constructor(response: Response, body: unknown) {
    const problem = isProblem(body) ? body : unexpected(response, body);
    super(`${problem.status} ${problem.code}: ${problem.detail}`);
    this.problem = problem;
    this.response = response;
  }

  get status(): number {
    return this.problem.status;
  }

  /** One of `PROBLEM_CODES` as long as the server is not newer than this client. */
  get code(): ProblemCode | (string & {}) {
    return this.problem.code;
  }

  /** Quote it when reporting an error: the server logged the cause under it. */
  get requestId(): string | null {
    return this.problem.request_id ?? this.response.headers.get("x-request-id");
  }

  /** The fields a 422 `validation_failed` refused, e.g. `[{field: "name", message: "…"}]`. */
  get fieldErrors(): FieldError[] {
    return this.problem.errors ?? [];
  }

  /** Seconds to wait before retrying a 429 or 503, from `Retry-After`. */
  get retryAfter(): number | null {
    const value = Number.parseInt(this.response.headers.get("retry-after") ?? "", 10);
    return Number.isNaN(value) ? null : value;
  }

  is(code: ProblemCode): boolean {
    return this.problem.code === code;
  }
}

function unexpected(response: Response, body: unknown): Problem {
  const text = typeof body === "string" ? body.trim().slice(0, 500) : "";
  return {
    type: "about:blank",
    title: response.statusText || `HTTP ${response.status}`,
    status: response.status,
    detail: text || `HTTP ${response.status} without a problem document`,
    code: "unexpected_response",
    request_id: response.headers.get("x-request-id"),
  };
}

/** The shape of what every openapi-fetch call resolves to. */
export type Result = { data?: unknown; error?: unknown; response: Response };
/** The data of the successful side of a result. */
export type DataOf<R> = R extends { data: infer D; error?: never } ? D : never;

/**
 * The data of a successful answer, else throws a `ProblemError`:
 * `const agent = unwrap(await api.GET("/v1/orgs/{org_id}/agents/{agent_id}", …))`.
 */
export function unwrap<R extends Result>(result: R): DataOf<R> {
  if (result.error !== undefined || !result.response.ok) {
    throw new ProblemError(result.response, result.error);
  }
  return result.data as DataOf<R>;
}

// ---------------------------------------------------------------------------------------
// Cursor pagination

type Get<P extends keyof paths> = paths[P] extends { get: infer O } ? O : never;
type OkJson<O> = O extends { responses: { 200: { content: { "application/json": infer B } } } }
  ? B
  : never;
type QueryOf<O> = O extends { parameters: { query?: infer Q } } ? NonNullable<Q> : never;
type PathParamsOf<O> = O extends { parameters: { path: infer T } } ? T : never;

/** The GET paths that answer `{data: […], next_cursor}` and take `?cursor=`. */
export type ListPath = {
  [P in keyof paths]: OkJson<Get<P>> extends PageShape
    ? "cursor" extends keyof QueryOf<Get<P>>
      ? P
      : never
    : never;
}[keyof paths];

/** One page of a list path, e.g. `ListPage<"/v1/orgs/{org_id}/agents">` has `total` too. */
export type ListPage<P extends ListPath> = Extract<OkJson<Get<P>>, PageShape>;
type PageShape = { data: unknown[]; next_cursor?: string | null };
/** One item of a list path. */
export type ListItem<P extends ListPath> = ListPage<P>["data"][number];

export interface PageOptions<P extends ListPath> {
  params: {
    path: PathParamsOf<Get<P>>;
    /** The list's filters and `limit` (the page size, 1–100); the cursor is managed here. */
    query?: Omit<QueryOf<Get<P>>, "cursor">;
  };
  /** Starts after this cursor instead of at the beginning. */
  cursor?: string;
  signal?: AbortSignal;
}

// The path is generic here, which openapi-fetch's per-path overloads cannot check; the
// public signatures above are what callers see.
type UntypedGet = (
  path: string,
  init: { params: { path: unknown; query: Record<string, unknown> }; signal?: AbortSignal },
) => Promise<Result>;

/**
 * Every page of a list, following `next_cursor` until it is `null`; one request per page,
 * made only when the loop asks for it.
 */
export async function* pages<P extends ListPath>(
  client: AgentsApiClient,
  path: P,
  options: PageOptions<P>,
): AsyncGenerator<ListPage<P>, void, undefined> {
  const get = client.GET as unknown as UntypedGet;
  let cursor = options.cursor;
  do {
    const query: Record<string, unknown> = { ...options.params.query };
    if (cursor) query["cursor"] = cursor;
    const init = { params: { path: options.params.path, query } };
    const result = await get(path, options.signal ? { ...init, signal: options.signal } : init);
    const page = unwrap(result) as ListPage<P>;
    yield page;
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
}

/** Every item of a list, across pages: `for await (const agent of items(api, …))`. */
export async function* items<P extends ListPath>(
  client: AgentsApiClient,
  path: P,
  options: PageOptions<P>,
): AsyncGenerator<ListItem<P>, void, undefined> {
  for await (const page of pages(client, path, options)) {
    yield* page.data as ListItem<P>[];
  }
}

// ---------------------------------------------------------------------------------------
// Knowledge uploads

export interface UploadOptions {
  /** The name the asset keeps; a `File`'s own name by default. */
  filename?: string;
  /** The agent the file is for; org-wide without it. */
  agentId?: string;
  signal?: AbortSignal;
}

/**
 * Uploads a file to the org's knowledge base (`multipart/form-data`, fields `file` and
 * `agent_id`). A new file answers 202 with the `job` that indexes it; the same bytes
 * again answer 200 with the existing asset and `job: null`.
 */
export async function uploadAsset(
  client: AgentsApiClient,
  orgId: string,
  file: Blob,
  options: UploadOptions = {},
): Promise<Uploaded> {
  const form = new FormData();
  const filename = options.filename ?? ("name" in file ? String(file.name) : "upload");
  form.append("file", file, filename);
  if (options.agentId !== undefined) form.append("agent_id", options.agentId);
  const result = await client.POST("/v1/orgs/{org_id}/knowledge/assets", {
    params: { path: { org_id: orgId } },
    body: { file, agent_id: options.agentId ?? null },
    bodySerializer: () => form,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return unwrap(result);
}

// ---------------------------------------------------------------------------------------
// Jobs

/** The statuses a job does not leave by itself (`failed` leaves only by a retry). */
export const FINISHED_JOB_STATUSES = [
  "succeeded",
  "failed",
  "cancelled",
] as const satisfies readonly JobStatus[];

export function isFinished(job: Job): boolean {
  return (FINISHED_JOB_STATUSES as readonly JobStatus[]).includes(job.status);
}

export interface FollowOptions {
  /** The first wait between two polls, in ms; it grows by half each time. Default 500. */
  intervalMs?: number;
  /** The longest wait between two polls, in ms. Default 5000. */
  maxIntervalMs?: number;
  /** Called with every state read, the last one included. */
  onUpdate?: (job: Job) => void;
  /** Stops following, the promise rejecting with the signal's reason:
   * e.g. `AbortSignal.timeout(60_000)`. */
  signal?: AbortSignal;
}

/**
 * Polls `GET /v1/orgs/{org_id}/jobs/{job_id}` until the job is succeeded, failed or
 * cancelled, and resolves with that last state (check `status`; `error` says why it failed).
 * Polling is all it needs; a server-sent event stream could replace it behind this signature.
 */
export async function followJob(
  client: AgentsApiClient,
  orgId: string,
  jobId: string,
  options: FollowOptions = {},
): Promise<Job> {
  const { signal, onUpdate } = options;
  const maxInterval = options.maxIntervalMs ?? 5000;
  let interval = Math.min(options.intervalMs ?? 500, maxInterval);
  const init = { params: { path: { org_id: orgId, job_id: jobId } } };
  for (;;) {
    const job = unwrap(
      await client.GET("/v1/orgs/{org_id}/jobs/{job_id}", signal ? { ...init, signal } : init),
    );
    onUpdate?.(job);
    if (isFinished(job)) return job;
    await sleep(interval, signal);
    interval = Math.min(interval * 1.5, maxInterval);
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const abort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", abort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", abort, { once: true });
  });
}

// ---------------------------------------------------------------------------------------
// Live events

/** One event of `GET /v1/orgs/{org_id}/events`: `event` names the kind, `data` is its
 * schema's (`{ event: "job", data: JobEvent }`, …); switch on `event` to narrow `data`. */
export type LiveEvent = Schemas["LiveEvent"];
export type LiveEventKind = LiveEvent["event"];

/** What `events` yields: an event and its `id`. Give the id back as `lastEventId` to
 * resume after that event. */
export interface ReceivedEvent {
  id: string;
  event: LiveEvent;
}

export interface EventsOptions {
  /** Resume after this event (an `id` received before): what was published since comes
   * first. The server keeps 5 minutes by default; after a longer gap, a `reset` event
   * comes first: refetch what you show. */
  lastEventId?: string;
  /** When the stream ends (the access token expired, the server restarted) or breaks,
   * connect again after the last event received, for as long as the iteration runs.
   * A failure of the first connection still throws, and so does any later answer but a
   * 429 or 5xx (e.g. a 401 for a fixed token that expired: use `getToken`). Default
   * false: the iteration ends with the stream. */
  reconnect?: boolean;
  /** The wait before connecting again, in ms, doubling while it fails (to 30 s); the
   * server's `retry:` replaces it, a 429's or 503's `Retry-After` lengthens it. Default 1000. */
  retryMs?: number;
  /** Stops: the iteration throws the signal's reason. Leaving the loop (`break`) closes
   * the stream too. */
  signal?: AbortSignal;
  /** Called when the stream is open (the server answered, and hears every event from
   * then on), after each reconnection too: load what you show then, and no change is
   * missed in between. */
  onOpen?: (response: Response) => void;
}

// A kind missing here, or one the schema no longer has, fails to compile: regenerating
// schema.ts with a new kind asks for it to be added.
const LIVE_EVENT_KINDS: { readonly [K in LiveEventKind]: true } = {
  job: true,
  asset: true,
  "conversation.message": true,
  "conversation.handoff": true,
  connection: true,
  reset: true,
};

function isLiveEventKind(kind: string): kind is LiveEventKind {
  return Object.hasOwn(LIVE_EVENT_KINDS, kind);
}

/**
 * The org's live events, as they happen: `for await (const { id, event } of events(api,
 * orgId))`. Reads the server-sent events over fetch (the bearer token goes in a header,
 * which `EventSource` cannot send), so it works in browsers and in Node 20+. An error
 * answer on connecting throws a `ProblemError`. Kinds this client does not know (a
 * server newer than it) are skipped.
 */
export async function* events(
  api: AgentsApiClient | ClientConfig,
  orgId: string,
  options: EventsOptions = {},
): AsyncGenerator<ReceivedEvent, void, undefined> {
  const client = "GET" in api ? api : createClient(api);
  const { signal, reconnect = false } = options;
  const stream: StreamState = { lastEventId: options.lastEventId ?? "", retryMs: undefined };
  let connected = false;
  let failures = 0;
  for (;;) {
    let wait: number;
    let fatal = false;
    try {
      const { body, response } = await openEvents(client, orgId, stream.lastEventId, signal);
      connected = true;
      failures = 0;
      try {
        options.onOpen?.(response);
      } catch (error) {
        fatal = true; // the caller's own error, not the network's: never retried
        await body.cancel().catch(() => {});
        throw error;
      }
      for await (const message of serverSentEvents(body, stream, signal)) {
        if (!isLiveEventKind(message.event)) continue;
        const data: unknown = JSON.parse(message.data);
        yield { id: stream.lastEventId, event: { event: message.event, data } as LiveEvent };
      }
      if (!reconnect) return;
      wait = stream.retryMs ?? options.retryMs ?? 1000;
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (fatal || !reconnect || !connected || !retryable(error)) throw error;
      failures += 1;
      const base = stream.retryMs ?? options.retryMs ?? 1000;
      wait = Math.min(base * 2 ** (failures - 1), 30_000);
      const after = error instanceof ProblemError ? error.retryAfter : null;
      if (after !== null) wait = Math.max(wait, after * 1000);
    }
    await sleep(wait, signal);
  }
}

/** The network, a 429 or a 5xx: worth another try. */
function retryable(error: unknown): boolean {
  if (error instanceof ProblemError) return error.status === 429 || error.status >= 500;
  return !(error instanceof SyntaxError); // a `data:` that is not JSON is no network's fault
}

async function openEvents(
  client: AgentsApiClient,
  orgId: string,
  lastEventId: string,
  signal: AbortSignal | undefined,
): Promise<{ body: ReadableStream<Uint8Array>; response: Response }> {
  const result = await client.GET("/v1/orgs/{org_id}/events", {
    params: {
      path: { org_id: orgId },
      ...(lastEventId ? { header: { "Last-Event-ID": lastEventId } } : {}),
    },
    headers: { Accept: "text/event-stream" },
    parseAs: "stream",
    ...(signal ? { signal } : {}),
  });
  const body = unwrap(result);
  const type = result.response.headers.get("content-type") ?? "";
  if (!body || !type.startsWith("text/event-stream")) {
    await body?.cancel().catch(() => {});
    const detail = `not an event stream (content-type: ${type || "none"})`;
    throw new ProblemError(result.response, detail);
  }
  return { body, response: result.response };
}

/** What outlives one connection: the last `id:` and `retry:` received. */
interface StreamState {
  lastEventId: string;
  retryMs: number | undefined;
}

/**
 * The events of a `text/event-stream` body, by the WHATWG rules: lines end with CRLF, LF or
 * CR; a blank line dispatches; `:` starts a comment (the server's keep-alive); one space
 * after the colon is dropped; `data:` lines join with LF; an event without data, or cut
 * off by the end of the stream, is dropped. Leaving early cancels the body.
 */
async function* serverSentEvents(
  body: ReadableStream<Uint8Array>,
  state: StreamState,
  signal: AbortSignal | undefined,
): AsyncGenerator<{ event: string; data: string }, void, undefined> {
  const reader = body.getReader();
  // fetch aborts the body with the signal it was given, a `fetch` of the caller's may not.
  const abort = () => void reader.cancel(signal?.reason).catch(() => {});
  signal?.addEventListener("abort", abort, { once: true });
  const decoder = new TextDecoder();
  let buffer = "";
  let data: string[] = [];
  let event = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (signal?.aborted) throw signal.reason;
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.search(/[\r\n]/)) >= 0) {
        // A CR last in the buffer may be half of a CRLF: wait for what follows.
        if (!done && end === buffer.length - 1 && buffer[end] === "\r") break;
        const line = buffer.slice(0, end);
        buffer = buffer.slice(buffer.startsWith("\r\n", end) ? end + 2 : end + 1);
        if (line === "") {
          if (data.length > 0) yield { event: event || "message", data: data.join("\n") };
          data = [];
          event = "";
          continue;
        }
        const colon = line.indexOf(":");
        if (colon === 0) continue;
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "data") data.push(text);
        else if (field === "event") event = text;
        else if (field === "id" && !text.includes("\0")) state.lastEventId = text;
        else if (field === "retry" && /^\d+$/.test(text)) state.retryMs = Number(text);
      }
      if (done) return;
    }
  } finally {
    signal?.removeEventListener("abort", abort);
    await reader.cancel().catch(() => {});
  }
}
