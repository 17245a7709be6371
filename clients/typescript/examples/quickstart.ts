// A tour of the client: list agents page by page, upload a knowledge file, follow the
// job that indexes it, read a problem, and listen to the org's live events. Type-checked
// by ./scripts/typescript-client.sh against the built package, as a user would import it.
//
// Run it against a server, in clients/typescript after `npm ci` (which builds dist/):
//   npx tsc -p examples/tsconfig.json --noEmit false --outDir examples/out
//   AGENTS_API_URL=http://127.0.0.1:8080 AGENTS_API_TOKEN=… AGENTS_API_ORG=… \
//     node examples/out/quickstart.js
import {
  type Agent,
  ProblemError,
  createClient,
  events,
  followJob,
  items,
  pages,
  unwrap,
  uploadAsset,
} from "@agents-api/client";

const api = createClient({
  baseUrl: process.env["AGENTS_API_URL"] ?? "http://127.0.0.1:8080",
  token: process.env["AGENTS_API_TOKEN"] ?? "",
});
const orgId = process.env["AGENTS_API_ORG"] ?? "";

// Who am I, and in which orgs?
const me = unwrap(await api.GET("/v1/me"));
console.log(`${me.email ?? me.user_id} is in ${me.orgs.length} org(s)`);

// 1. Agents, 20 per page, following next_cursor; `total` counts all pages.
for await (const page of pages(api, "/v1/orgs/{org_id}/agents", {
  params: { path: { org_id: orgId }, query: { limit: 20, status: "active" } },
})) {
  console.log(`${page.data.length} of ${page.total} active agents`);
  for (const agent of page.data) console.log(`  ${agent.name} (${agent.model})`);
}
// Or item by item, across pages.
const drafts: Agent[] = [];
for await (const agent of items(api, "/v1/orgs/{org_id}/agents", {
  params: { path: { org_id: orgId }, query: { status: "draft" } },
})) {
  drafts.push(agent);
}

// 2. Upload a file to the knowledge base (text, Markdown, HTML, PDF or DOCX).
// In Node, `new Blob([await readFile(path)])` (or `await openAsBlob(path)`) wraps a file.
const text = "# Pricing\n\nOne seat costs 10 EUR a month; paid yearly, 2 months are free.\n";
const { asset, job } = await uploadAsset(api, orgId, new Blob([text], { type: "text/markdown" }), {
  filename: "pricing.md",
  ...(drafts[0] ? { agentId: drafts[0].id } : {}),
});
console.log(`asset ${asset.id}: ${asset.status}`);

// 3. Follow the job that indexes it (null when the same bytes were already there).
if (job) {
  const done = await followJob(api, orgId, job.id, {
    onUpdate: (j) => console.log(`job ${j.type}: ${j.status} ${j.attempts}/${j.max_attempts}`),
    signal: AbortSignal.timeout(120_000),
  });
  if (done.status !== "succeeded") console.error(`indexing ${done.status}: ${done.error}`);
}

// 4. Errors are problem+json: typed on the result, or thrown by unwrap as ProblemError.
const { data, error } = await api.POST("/v1/orgs/{org_id}/agents", {
  params: { path: { org_id: orgId } },
  body: { name: "x", model: "gpt-4o-mini", channels: ["chat"] },
});
if (error) {
  const fields = error.errors?.map((e) => `${e.field}: ${e.message}`) ?? [];
  console.log(`${error.status} ${error.code}`, fields);
} else {
  console.log(`created ${data.id}`);
}
try {
  const agentId = "00000000-0000-7000-8000-000000000000";
  unwrap(await api.DELETE("/v1/orgs/{org_id}/agents/{agent_id}", {
    params: { path: { org_id: orgId, agent_id: agentId } },
  }));
} catch (e) {
  if (!(e instanceof ProblemError && e.is("not_found"))) throw e;
  console.log(`no agent ${e.status} (request ${e.requestId})`);
}

// 5. Live events for ten seconds (server-sent events): what changes in the org, as it happens.
try {
  for await (const { id, event } of events(api, orgId, { signal: AbortSignal.timeout(10_000) })) {
    if (event.event === "job") console.log(`${id} job ${event.data.job_id}: ${event.data.status}`);
    else console.log(`${id} ${event.event}`, event.data);
  }
} catch (e) {
  if (!(e instanceof DOMException && e.name === "TimeoutError")) throw e;
}
