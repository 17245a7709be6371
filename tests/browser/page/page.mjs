// The page of the browser checks (tests/browser/run.mjs opens it from two origins). It does
// what a web front end does with the typed client: read /v1/me, list the org's agents a
// page at a time, and, when the API has live events, read one from the event stream. Every
// step's outcome goes into `window.browserChecks` (and the page, for a person to read); the
// page decides nothing, run.mjs judges.
//
// Settings: `window.browserChecksConfig` (run.mjs sets it before the page loads, so the
// token is in no URL) or, for a person opening the page by hand, the query string: api
// (the API's origin), token (a bearer access token), org (an org the token's user owns),
// connection (a CRM connection of that org, for a job to queue), and events=1 when the
// API documents GET /v1/orgs/{org_id}/events.
import { createClient, items, pages, unwrap } from "@agents-api/client";

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
// Live events: EventSource cannot send Authorization, so the stream is read as fetch does
// it (the typed client with parseAs "stream": the same bearer token and credentials) and
// the server-sent event frames are parsed here.

// Connected (the server answers once it listens), queue a job: its `job` event must come.
async function liveEvent() {
  return withStream(null, async ({ contentType, events }) => {
    const job = await queueJob();
    return { contentType, ...(await eventOf(events, job.id)), jobId: job.id };
  });
}

// Reconnecting with Last-Event-ID (a header: the browser preflights it) gets what was
// published while disconnected: a job queued in between. (Published within a moment of
// its commit; should the reconnection beat it, it comes live instead: either way it comes.)
async function resumedEvent(lastEventId) {
  const job = await queueJob();
  await new Promise((resolve) => setTimeout(resolve, 500));
  return withStream(lastEventId, async ({ contentType, events }) => ({
    contentType,
    ...(await eventOf(events, job.id)),
    jobId: job.id,
  }));
}

async function queueJob() {
  return unwrap(
    await api.POST("/v1/orgs/{org_id}/jobs", {
      params: { path: { org_id: orgId } },
      body: { type: "crm:sync-pipelines", connection_id: connectionId },
    }),
  );
}

/** Opens the org's event stream, runs `use` with it, closes it; 20 s at most. */
async function withStream(lastEventId, use) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(new Error("no job event within 20 s")), 20_000);
  try {
    const headers = { Accept: "text/event-stream" };
    if (lastEventId) headers["Last-Event-ID"] = lastEventId;
    const opened = await api.GET("/v1/orgs/{org_id}/events", {
      params: { path: { org_id: orgId } },
      headers,
      parseAs: "stream",
      signal: abort.signal,
    });
    const contentType = opened.response.headers.get("content-type");
    return await use({ contentType, events: sseEvents(unwrap(opened), abort.signal) });
  } finally {
    clearTimeout(timer);
    abort.abort(new Error("done"));
  }
}

/** The first `job` event of that job (later ones, `running` and on, are not waited for). */
async function eventOf(events, jobId) {
  for await (const event of events) {
    if (event.event !== "job") continue;
    const data = JSON.parse(event.data);
    if (data.job_id === jobId) return { ...event, data };
  }
  throw new Error("the event stream ended before the job's event");
}

// Yields {id, ownId, event, data} per event of a text/event-stream body, by the WHATWG
// rules: lines end with CRLF, LF or CR; a blank line dispatches; `:` starts a comment; one
// leading space after the colon is dropped; data lines join with LF; `id` is the last id
// seen (ownId: this event carried an `id:` line itself).
async function* sseEvents(stream, signal) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel(signal.reason).catch(() => {}), {
    once: true,
  });
  let buffer = "";
  let lastId = "";
  let event = { data: [], event: "", ownId: false };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let match;
    while ((match = /\r\n|\r(?!$)|\n/.exec(buffer))) {
      const line = buffer.slice(0, match.index);
      buffer = buffer.slice(match.index + match[0].length);
      if (line === "") {
        if (event.data.length) {
          const name = event.event || "message";
          yield { id: lastId, ownId: event.ownId, event: name, data: event.data.join("\n") };
        }
        event = { data: [], event: "", ownId: false };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") event.data.push(value);
      else if (field === "event") event.event = value;
      else if (field === "id" && !value.includes("\0")) {
        lastId = value;
        event.ownId = true;
      }
    }
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
