// Real-browser checks of a running agents-api (started by scripts/browser-checks.sh):
// Debian's Chromium, headless, driven by playwright-core.
//
//  1. allowed origin: a page served from an origin in CORS_ALLOWED_ORIGINS uses the typed
//     client (clients/typescript/dist) to read /v1/me and list agents; the browser sent a
//     CORS preflight, whose answer echoed the origin and allowed credentials; and, through
//     the client's `events` helper, the page receives one live event from
//     GET /v1/orgs/{org_id}/events and, reconnecting with Last-Event-ID, one published and
//     stored while it was away, replayed as the first event (an API that does not document
//     the events endpoint fails these checks).
//  2. other origin: the same page from an origin not allowed is refused by the browser
//     (TypeError, nothing readable), the server having answered the preflight without
//     Access-Control-Allow-Origin.
//  3. /docs renders every operation of the OpenAPI document, with no console error and
//     no failed request.
//
// It serves the page itself, on ALLOWED_PORT and OTHER_PORT (two origins). Prints one
// PASS/FAIL line per check and a closing count; exits 1 on any failure.
// Environment: API_BASE, TOKEN, USER_ID, USER_EMAIL, ORG_ID, CONNECTION_ID, AGENT_NAMES
// (comma-separated, as seeded), ALLOWED_PORT, OTHER_PORT, CLIENT_DIST, OPENAPI_FETCH_DIST,
// CHROMIUM (default /usr/bin/chromium).
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === "") throw new Error(`run.mjs: ${name} is not set`);
  return value;
};
const config = {
  api: env("API_BASE"),
  token: env("TOKEN"),
  userId: env("USER_ID"),
  email: env("USER_EMAIL"),
  orgId: env("ORG_ID"),
  connectionId: env("CONNECTION_ID"),
  agentNames: env("AGENT_NAMES").split(","),
  allowedPort: Number(env("ALLOWED_PORT")),
  otherPort: Number(env("OTHER_PORT")),
  clientDist: env("CLIENT_DIST"),
  openapiFetchDist: env("OPENAPI_FETCH_DIST"),
  chromium: env("CHROMIUM", "/usr/bin/chromium"),
};
const allowedOrigin = `http://127.0.0.1:${config.allowedPort}`;
const otherOrigin = `http://127.0.0.1:${config.otherPort}`;
const PAGE_TIMEOUT_MS = 40_000;

// A run that hangs anyway (a browser that never answers) still ends, and says so.
const watchdog = setTimeout(() => {
  console.error("run.mjs: FAIL: the browser checks did not finish within 100 s");
  process.exit(1);
}, 100_000);
watchdog.unref();

// ---------------------------------------------------------------------------------------
// Reporting

const counts = { passed: 0, failed: 0 };

function report(outcome, name, detail) {
  const word = { passed: "PASS", failed: "FAIL" }[outcome];
  counts[outcome] += 1;
  console.log(`${word.padEnd(7)} ${name}${detail ? `: ${detail}` : ""}`);
}

/** Runs `assert` (which throws to fail and returns the detail to show). */
async function check(name, assert) {
  try {
    report("passed", name, await assert());
  } catch (error) {
    report("failed", name, error instanceof Error ? error.message : String(error));
  }
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

// ---------------------------------------------------------------------------------------
// The static origins: the page, the typed client as built (dist/), and openapi-fetch.

const here = fileURLToPath(new URL(".", import.meta.url));
const roots = [
  ["/client/", config.clientDist],
  ["/vendor/openapi-fetch/", config.openapiFetchDist],
  ["/", join(here, "page")],
];
const types = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".map": "application/json",
};

async function serveStatic(request, response) {
  const path = new URL(request.url ?? "/", "http://x").pathname;
  if (path === "/favicon.ico") {
    response.writeHead(204).end();
    return;
  }
  const file = path === "/" ? "/index.html" : path;
  for (const [prefix, root] of roots) {
    if (!file.startsWith(prefix)) continue;
    const relative = normalize(file.slice(prefix.length));
    if (relative.startsWith("..")) break;
    try {
      const body = await readFile(join(root, relative));
      response.writeHead(200, {
        "content-type": types[extname(relative)] ?? "application/octet-stream",
        "cache-control": "no-store",
      });
      response.end(body);
      return;
    } catch {
      break;
    }
  }
  response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
}

function listen(port) {
  return new Promise((resolve, reject) => {
    const server = createServer((req, res) => {
      serveStatic(req, res).catch(() => res.destroy());
    });
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

// ---------------------------------------------------------------------------------------
// What the browser did on the network, through the DevTools protocol: Playwright's own
// network events leave CORS preflights out on purpose, and the checks are about them.

async function recordNetwork(context, page) {
  const cdp = await context.newCDPSession(page);
  const urls = new Map();
  const preflights = new Map();
  const corsErrors = [];
  cdp.on("Network.requestWillBeSent", ({ requestId, request, initiator }) => {
    urls.set(requestId, request.url);
    if (initiator?.type === "preflight" || request.method === "OPTIONS") {
      preflights.set(requestId, { url: request.url, status: null, headers: {} });
    }
  });
  // The headers as they came off the wire (responseReceived may show fewer).
  cdp.on("Network.responseReceivedExtraInfo", ({ requestId, statusCode, headers }) => {
    const entry = preflights.get(requestId);
    if (entry) Object.assign(entry, { status: statusCode, headers: lower(headers) });
  });
  cdp.on("Network.responseReceived", ({ requestId, response }) => {
    const entry = preflights.get(requestId);
    if (entry && entry.status === null) {
      Object.assign(entry, { status: response.status, headers: lower(response.headers) });
    }
  });
  // Why the browser blocked a request, in its own words (e.g. PreflightMissingAllowOriginHeader).
  cdp.on("Network.loadingFailed", ({ requestId, corsErrorStatus }) => {
    if (corsErrorStatus)
      corsErrors.push({ url: urls.get(requestId), error: corsErrorStatus.corsError });
  });
  await cdp.send("Network.enable");
  return { preflights: () => [...preflights.values()], corsErrors: () => [...corsErrors] };
}

function lower(headers) {
  return Object.fromEntries(Object.entries(headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
}

/** What the page reads before it runs (the token stays out of every URL). */
function pageSettings(withEvents) {
  return {
    api: config.api,
    token: config.token,
    org: config.orgId,
    connection: config.connectionId,
    events: withEvents ? "1" : "0",
  };
}

/** Opens the page in a fresh context (no CORS cache), waits for its steps, returns them. */
async function runPage(browser, origin, withEvents) {
  const context = await browser.newContext();
  await context.addInitScript((settings) => {
    window.browserChecksConfig = settings;
  }, pageSettings(withEvents));
  const page = await context.newPage();
  const network = await recordNetwork(context, page);
  const responses = [];
  page.on("response", (response) => {
    if (response.url().startsWith(config.api)) responses.push(response);
  });
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  // Only told when the page does not finish: a refused origin logs CORS errors on purpose.
  const consoleErrors = [];
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    const where = message.location().url;
    consoleErrors.push(`${message.text()}${where ? ` (${where})` : ""}`);
  });
  try {
    await page.goto(`${origin}/`);
    // The module sets it before its first request: missing after load, it did not load.
    await page.waitForFunction(() => window.browserChecks !== undefined, null, {
      timeout: 5_000,
    });
    await page.waitForFunction(() => window.browserChecks?.done === true, null, {
      timeout: PAGE_TIMEOUT_MS,
    });
    const state = await page.evaluate(() => window.browserChecks);
    const headersOf = async (path) => {
      const response = responses.find((r) => new URL(r.url()).pathname === path);
      return response ? lower(await response.allHeaders()) : null;
    };
    return {
      steps: state.steps,
      preflights: network.preflights(),
      corsErrors: network.corsErrors(),
      meHeaders: await headersOf("/v1/me"),
      pageErrors,
    };
  } catch (error) {
    // Say what the page had got to, not just that it timed out.
    const partial = await page.evaluate(() => window.browserChecks).catch(() => null);
    throw new Error(
      `${error.message.split("\n")[0]}; page state: ${JSON.stringify(partial)}; ` +
        `page errors: ${pageErrors.join(" | ") || "none"}; console errors: ${consoleErrors.join(" | ") || "none"}`,
    );
  } finally {
    await context.close();
  }
}

const stepValue = (steps, name) => {
  const step = steps[name];
  expect(step, `the page did not run "${name}"`);
  expect(step.ok, `${name} failed in the page: ${JSON.stringify(step.error)}`);
  return step.value;
};

const meUrl = () => `${config.api}/v1/me`;

// ---------------------------------------------------------------------------------------
// 1. The allowed origin

async function allowedOriginChecks(browser, withEvents) {
  const name = `allowed origin ${allowedOrigin}`;
  let result;
  await check(`${name}: page ran`, async () => {
    result = await runPage(browser, allowedOrigin, withEvents);
    expect(result.pageErrors.length === 0, `uncaught errors: ${result.pageErrors.join(" | ")}`);
    return `${Object.keys(result.steps).join(", ")} in the page`;
  });
  if (!result) return;
  const { steps } = result;

  await check(`${name}: GET /v1/me through the typed client`, () => {
    const me = stepValue(steps, "me");
    expect(me.user_id === config.userId, `user_id ${me.user_id}, expected ${config.userId}`);
    expect(me.email === config.email, `email ${me.email}, expected ${config.email}`);
    expect(
      me.orgs.some((o) => o.id === config.orgId && o.role === "owner"),
      `orgs ${JSON.stringify(me.orgs)} lack ${config.orgId} as owner`,
    );
    return `user ${me.user_id} <${me.email}>, owner of ${me.orgs.length} org(s)`;
  });

  await check(`${name}: agents listed with cursor pages (pages/items helpers)`, () => {
    const { names, pages, total } = stepValue(steps, "agents");
    const want = [...config.agentNames].sort();
    const got = [...names].sort();
    expect(
      JSON.stringify(got) === JSON.stringify(want),
      `names ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`,
    );
    expect(total === want.length, `total ${total}, expected ${want.length}`);
    const expectedPages = Math.ceil(want.length / 2);
    expect(pages === expectedPages, `${pages} pages of 2, expected ${expectedPages}`);
    return `${names.length} agents over ${pages} pages: ${names.join(", ")}`;
  });

  await check(`${name}: CORS preflight and credentialed answer`, () => {
    const preflight = result.preflights.find((p) => p.url === meUrl());
    expect(
      preflight,
      `the browser sent no OPTIONS ${meUrl()} (preflights seen: ${JSON.stringify(result.preflights)})`,
    );
    const h = preflight.headers ?? {};
    expect(
      preflight.status >= 200 && preflight.status < 300,
      `preflight answered ${preflight.status}`,
    );
    expect(
      h["access-control-allow-origin"] === allowedOrigin,
      `preflight Access-Control-Allow-Origin ${JSON.stringify(h["access-control-allow-origin"])}, expected ${allowedOrigin}`,
    );
    expect(
      h["access-control-allow-credentials"] === "true",
      `preflight Access-Control-Allow-Credentials ${JSON.stringify(h["access-control-allow-credentials"])}`,
    );
    expect(
      /(^|[\s,])authorization($|[\s,])/i.test(h["access-control-allow-headers"] ?? ""),
      `preflight Access-Control-Allow-Headers ${JSON.stringify(h["access-control-allow-headers"])} lacks authorization`,
    );
    const get = result.meHeaders;
    expect(get, "no response to GET /v1/me was seen");
    expect(
      get["access-control-allow-origin"] === allowedOrigin &&
        get["access-control-allow-credentials"] === "true",
      `GET /v1/me answered ACAO ${JSON.stringify(get["access-control-allow-origin"])}, ACAC ${JSON.stringify(get["access-control-allow-credentials"])}`,
    );
    expect(
      /origin/i.test(get.vary ?? ""),
      `GET /v1/me Vary ${JSON.stringify(get.vary)} lacks Origin`,
    );
    expect(
      result.corsErrors.length === 0,
      `the browser blocked requests: ${JSON.stringify(result.corsErrors)}`,
    );
    return `OPTIONS /v1/me → ${preflight.status}, Access-Control-Allow-Origin ${allowedOrigin}, credentials allowed; GET echoed it with Vary: ${get.vary}`;
  });

  if (!withEvents) {
    report(
      "failed",
      `${name}: live event and resumption`,
      "the API does not document GET /v1/orgs/{org_id}/events: no live events to receive",
    );
    return;
  }
  const eventCheck = (value) => {
    expect(
      /^text\/event-stream/.test(value.contentType ?? ""),
      `content-type ${value.contentType}`,
    );
    expect(
      /^\d+-\d+$/.test(value.id ?? ""),
      `the event came without an id: (${JSON.stringify(value)})`,
    );
    expect(
      value.event === "job" && value.data?.job_id === value.jobId,
      `the event is not the queued job's (${value.jobId}): ${JSON.stringify(value)}`,
    );
    return `event: ${value.event}, id: ${value.id}, data ${JSON.stringify(value.data)}`;
  };
  await check(`${name}: one live event through the client's events helper`, () =>
    eventCheck(stepValue(steps, "liveEvent")),
  );
  await check(`${name}: the stream resumes with Last-Event-ID, replaying what it missed`, () => {
    const first = stepValue(steps, "liveEvent");
    const resumed = stepValue(steps, "resumedEvent");
    expect(
      resumed.resumedAfter === first.id,
      `resumed after ${resumed.resumedAfter}, not ${first.id}`,
    );
    const detail = eventCheck(resumed);
    expect(
      resumed.id === resumed.witnessedId,
      `the first event after reconnecting has id ${resumed.id}; the job queued while away has ${resumed.witnessedId}`,
    );
    expect(later(resumed.id, first.id), `id ${resumed.id} is not after ${first.id}`);
    return `after ${first.id}, the job queued and stored while disconnected came first: ${detail}`;
  });
}

/** Whether event id `a` (`<ms>-<seq>`) comes after `b`. */
function later(a, b) {
  const [aMs, aSeq] = a.split("-").map(BigInt);
  const [bMs, bSeq] = b.split("-").map(BigInt);
  return aMs > bMs || (aMs === bMs && aSeq > bSeq);
}

// ---------------------------------------------------------------------------------------
// 2. Another origin

async function otherOriginChecks(browser) {
  const name = `other origin ${otherOrigin}`;
  let result;
  await check(`${name}: browser refuses the API's answers`, async () => {
    result = await runPage(browser, otherOrigin, false);
    const me = result.steps.me;
    expect(me, "the page did not run me");
    expect(!me.ok, `the page read /v1/me: ${JSON.stringify(me.value)}`);
    expect(
      me.error.name === "TypeError" && /Failed to fetch/.test(me.error.message),
      `expected TypeError "Failed to fetch", got ${JSON.stringify(me.error)}`,
    );
    const agents = result.steps.agents;
    expect(agents && !agents.ok, `the page listed agents: ${JSON.stringify(agents?.value)}`);
    const why = result.corsErrors.find((e) => e.url === meUrl());
    expect(
      why,
      `the browser reported no CORS error for ${meUrl()}: ${JSON.stringify(result.corsErrors)}`,
    );
    return `${me.error.name}: ${me.error.message} (the browser: ${why.error}); no body readable`;
  });
  if (!result) return;

  await check(`${name}: server answered the preflight without allowing it`, async () => {
    const preflight = result.preflights.find((p) => p.url === meUrl());
    expect(
      preflight,
      `the browser sent no OPTIONS ${meUrl()} (preflights seen: ${JSON.stringify(result.preflights)})`,
    );
    expect(preflight.status !== null, "the preflight got no answer");
    const cors = Object.keys(preflight.headers ?? {}).filter((k) =>
      k.startsWith("access-control-"),
    );
    expect(cors.length === 0, `the browser's preflight got CORS headers: ${cors.join(", ")}`);
    // The same preflight from here, to see the server's whole answer for ourselves.
    const direct = await fetch(meUrl(), {
      method: "OPTIONS",
      headers: {
        Origin: otherOrigin,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
      },
    });
    const directCors = [...direct.headers.keys()].filter((k) => k.startsWith("access-control-"));
    expect(directCors.length === 0, `a direct preflight got ${directCors.join(", ")}`);
    return `OPTIONS /v1/me → ${preflight.status} without any Access-Control-* header (direct: ${direct.status}, none either)`;
  });
}

// ---------------------------------------------------------------------------------------
// 3. /docs

const METHODS = ["get", "post", "put", "patch", "delete"];

async function docsCheck(browser, openapi) {
  await check("/docs renders every operation without errors", async () => {
    const expected = Object.values(openapi.paths ?? {}).reduce(
      (n, item) => n + METHODS.filter((m) => item[m]).length,
      0,
    );
    const context = await browser.newContext();
    const page = await context.newPage();
    const problems = [];
    const ignored = [];
    page.on("console", (message) => {
      if (message.type() !== "error") return;
      const where = message.location().url;
      // The browser asks for /favicon.ico by itself; the API has none (404). Not the page's.
      if (new URL(where || "about:blank", config.api).pathname === "/favicon.ico") {
        ignored.push("the browser's own /favicon.ico request (404)");
        return;
      }
      problems.push(`console error: ${message.text()}${where ? ` (${where})` : ""}`);
    });
    page.on("pageerror", (error) => problems.push(`uncaught: ${error}`));
    page.on("requestfailed", (request) =>
      problems.push(`failed request: ${request.url()} (${request.failure()?.errorText})`),
    );
    page.on("response", (response) => {
      if (response.status() >= 400) problems.push(`${response.status()} for ${response.url()}`);
    });
    try {
      await page.goto(`${config.api}/docs`, { waitUntil: "load" });
      await page
        .waitForFunction(
          (n) => document.querySelectorAll("#operations details").length >= n,
          expected,
          { timeout: 15_000 },
        )
        .catch(() => {});
      await page.waitForLoadState("networkidle");
      const rendered = await page.locator("#operations details").count();
      const summary = (await page.locator("#summary").textContent()) ?? "";
      const tags = await page.locator("#toc a").count();
      expect(expected > 0, "the OpenAPI document has no operations");
      expect(
        rendered === expected,
        `${rendered} operations rendered, the document has ${expected} (summary: ${summary})`,
      );
      expect(problems.length === 0, problems.join("; "));
      const aside = ignored.length ? ` (ignored: ${[...new Set(ignored)].join(", ")})` : "";
      return `${rendered} operations in ${tags} tags, no console error, no failed request${aside}`;
    } finally {
      await context.close();
    }
  });
}

// ---------------------------------------------------------------------------------------

async function main() {
  const servers = await Promise.all([listen(config.allowedPort), listen(config.otherPort)]);
  const openapi = await (await fetch(`${config.api}/v1/openapi.json`)).json();
  const withEvents = Boolean(openapi.paths?.["/v1/orgs/{org_id}/events"]?.get);
  const browser = await chromium.launch({
    executablePath: config.chromium,
    headless: true,
    // We run as root (CI too), where Chromium's sandbox cannot start.
    args: ["--no-sandbox"],
  });
  console.log(`Chromium ${browser.version()} (playwright-core), API ${config.api}`);
  try {
    await allowedOriginChecks(browser, withEvents);
    await otherOriginChecks(browser);
    await docsCheck(browser, openapi);
  } finally {
    await browser.close();
    for (const server of servers) server.close();
  }
  console.log(`browser-checks: ${counts.passed} passed, ${counts.failed} failed`);
  process.exitCode = counts.failed === 0 ? 0 : 1;
}

main().catch((error) => {
  console.error(`run.mjs: FAIL: ${error.stack ?? error}`);
  process.exit(1);
});
