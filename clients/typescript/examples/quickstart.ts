// A tour of the client: list agents page by page, upload a knowledge file, follow the
// job that indexes it, and read a problem. Type-checked by ./scripts/typescript-client.sh
// against the built package, as a user would import it.
//
// Run it against a server (Node 20+), after `npm run build` in clients/typescript:
//   AGENTS_API_URL=http://127.0.0.1:8080 AGENTS_API_TOKEN=… AGENTS_API_ORG=… \
//     node --experimental-strip-types examples/quickstart.ts   (Node 22.6+), or compile it with tsc.
import { readFile } from "node:fs/promises";

import {
  type Agent,
  ProblemError,
  createClient,
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
const bytes = await readFile(new URL("../README.md", import.meta.url));
const { asset, job } = await uploadAsset(api, orgId, new Blob([bytes], { type: "text/markdown" }), {
  filename: "client-readme.md",
  ...(drafts[0] ? { agentId: drafts[0].id } : {}),
});
console.log(`asset ${asset.id}: ${asset.status}`);

// 3. Follow the job that indexes it (null when the same bytes were already there).
if (job) {
  const done = await followJob(api, orgId, job.id, {
    onUpdate: (j) => console.log(`job ${j.type}: ${j.status} (attempt ${j.attempts}/${j.max_attempts})`),
    signal: AbortSignal.timeout(120_000),
  });
  if (done.status !== "succeeded") console.error(`indexing ${done.status}: ${done.error ?? ""}`);
}

// 4. Errors are problem+json: typed on the result, or thrown by unwrap as ProblemError.
const { data, error } = await api.POST("/v1/orgs/{org_id}/agents", {
  params: { path: { org_id: orgId } },
  body: { name: "x", model: "gpt-4o-mini", channels: ["chat"] },
});
if (error) {
  console.log(`${error.status} ${error.code}`, error.errors?.map((e) => `${e.field}: ${e.message}`));
} else {
  console.log(`created ${data.id}`);
}
try {
  unwrap(await api.DELETE("/v1/orgs/{org_id}/agents/{agent_id}", {
    params: { path: { org_id: orgId, agent_id: "00000000-0000-7000-8000-000000000000" } },
  }));
} catch (e) {
  if (e instanceof ProblemError && e.is("not_found")) console.log(`no such agent (request ${e.requestId})`);
  else throw e;
}
