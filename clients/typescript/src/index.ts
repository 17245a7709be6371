/**
 * A thin typed client for agents-api: openapi-fetch over the types that openapi-typescript
 * generates from the API's OpenAPI document (./schema.ts, never edited by hand), plus
 * what most callers need: a bearer token on every request, problem+json errors as a typed
 * `ProblemError`, cursor pagination, knowledge uploads and following a job to its end.
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
