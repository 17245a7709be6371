// The page of the browser checks (tests/browser/run.mjs opens it from two origins). It does
// what a web front end does with the typed client: read /v1/me, list the org's agents a
// page at a time, and, when the API has live events, read one from the event stream with
// the client's `events` helper, then one replayed after reconnecting with Last-Event-ID.
// Every step's outcome goes into `window.browserChecks` (and the page, for a person to
// read); the page decides nothing, run.mjs judges.
//
// Settings: `window.browserChecksConfig` (run.mjs sets it before the page loads, so the
// token is in no URL) or, for a person opening the page by hand, the query string: api
// (the API's origin), token (a bearer access token), org (an org the token's user owns),
// connection (a CRM connection of that org, for a job to queue), and events=1 when the
// API documents GET /v1/orgs/{org_id}/events.
import { createClient, events, items, pages, unwrap } from "@agents-api/client";

const settings =
  window.browserChecksConfig ?? Object.fromEntries(new URLSearchParams(location.search));
const apiOrigin = settings.api ?? "";
const token = settings.token ?? "";
const orgId = settings.org ?? "";
const connectionId = settings.connection ?? "";
const withEvents = String(settings.events) === "1";

// `credentials: "include"`, as a front end that also has cookies would send: the browser
// then accepts an answer only with the exact origin echoed and credentials allowed.
const credentialed = (request) => fetch(request, { credentials: "include" });
const api = createClient({ baseUrl: apiOrigin, token, fetch: credentialed });

const state = { done: false, origin: location.origin, steps: {} };
window.browserChecks = state;

function describe(error) {
  return {
    name: error?.name ?? typeof error,
    message: String(error?.message ?? error),
    status: error?.status ?? null,
    code: error?.code ?? null,
  };
}

async function step(name, run) {
  const started = performance.now();
  try {
    state.steps[name] = { ok: true, value: await run() };
  } catch (error) {
    state.steps[name] = { ok: false, error: describe(error) };
  }
  state.steps[name].ms = Math.round(performance.now() - started);
  show();
}

function show() {
  document.getElementById("origin").textContent = location.origin;
  document.getElementById("results").textContent = JSON.stringify(state, null, 2);
}

async function me() {
  const result = await api.GET("/v1/me");
  // What the page could read of the answer: nothing, when the browser refused it.
  return { ...unwrap(result), status: result.response.status };
}

// Two at a time, so that listing the seeded agents takes more than one page.
async function agents() {
  const query = { limit: 2 };
  let pageCount = 0;
  let total = null;
  for await (const page of pages(api, "/v1/orgs/{org_id}/agents", {
    params: { path: { org_id: orgId }, query },
  })) {
    pageCount += 1;
    total = page.total;
  }
  const names = [];
  for await (const agent of items(api, "/v1/orgs/{org_id}/agents", {
    params: { path: { org_id: orgId }, query },
  })) {
    names.push(agent.name);
  }
  return { names, pages: pageCount, total };
}

// ---------------------------------------------------------------------------------------
// Live events, through the client's `events` helper: EventSource cannot send
// Authorization, so the helper reads the stream with fetch (the same client, so the same
// bearer token and credentials) and parses the server-sent events.

// Once the stream is open (the server answers when it hears the org), queue a job: its
// `job` event must come.
async function liveEvent() {
  let job;
  const first = await firstEvent(null, {
    onOpen: () => {
      job = queueJob();
      job.catch(() => {}); // awaited below; a failure must not also be an unhandled one
    },
    wanted: async (event) => event.event === "job" && event.data.job_id === (await job).id,
  });
  return { ...first, jobId: (await job).id };
}

// Replayed, not live: with the stream closed, a job is queued, and a second stream (the
// witness) reads on until that job's event has come, so the server has stored it. Only
// then does the page reconnect with Last-Event-ID (a header: the browser preflights it);
// the first event it receives must be that one, with the id the witness saw. (The
// browser checks' server runs no jobs, so nothing else happens in the org meanwhile.)
async function resumedEvent(lastEventId) {
  const job = await queueJob();
  const witnessed = await firstEvent(lastEventId, {
    wanted: (event) => event.event === "job" && event.data.job_id === job.id,
  });
  const replayed = await firstEvent(lastEventId, { wanted: () => true });
  return { ...replayed, jobId: job.id, witnessedId: witnessed.id, resumedAfter: lastEventId };
}

async function queueJob() {
  return unwrap(
    await api.POST("/v1/orgs/{org_id}/jobs", {
      params: { path: { org_id: orgId } },
      body: { type: "crm:sync-pipelines", connection_id: connectionId },
    }),
  );
}

/**
 * Opens the org's event stream with the client's `events` (after `lastEventId`, when
 * given), returns the first event that `wanted` accepts as `{id, event, data,
 * contentType}`, and closes the stream; 20 s at most.
 */
async function firstEvent(lastEventId, { wanted, onOpen }) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(new Error("no such event within 20 s")), 20_000);
  let contentType = null;
  const options = {
    signal: abort.signal,
    onOpen: (response) => {
      contentType = response.headers.get("content-type");
      onOpen?.();
    },
    ...(lastEventId ? { lastEventId } : {}),
  };
  try {
    for await (const { id, event } of events(api, orgId, options)) {
      if (await wanted(event)) return { id, event: event.event, data: event.data, contentType };
    }
    throw new Error("the event stream ended before the event");
  } finally {
    clearTimeout(timer);
  }
}

await step("me", me);
await step("agents", agents);
if (withEvents) {
  await step("liveEvent", liveEvent);
  const first = state.steps.liveEvent;
  if (first.ok) await step("resumedEvent", () => resumedEvent(first.value.id));
}
state.done = true;
show();
