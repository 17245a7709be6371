// Turns the OpenAPI document printed by `agents-api openapi` into src/schema.ts.
// Usage: node scripts/generate.mjs OPENAPI_JSON OUTPUT_TS
// Run through ../../scripts/typescript-client.sh, which builds the binary, prints the
// document and checks (with --check) that the committed file is current.
//
// Adjustments to openapi-typescript's defaults, all deterministic:
// - operationIds are dropped before generation: the document reuses handler names
//   (`list`, `show`, … in several resources), which would collide in the `operations`
//   interface; without them every operation is typed inline under its path.
// - `format: binary` (the upload form's `file`) becomes `Blob` instead of `string`.
// - a free-form object (`{"type": "object"}`: a job's payload and result, an asset's
//   progress) is `Record<string, unknown>`, not `Record<string, never>`.
import { readFile, writeFile } from "node:fs/promises";
import openapiTS, { astToString } from "openapi-typescript";
import ts from "typescript";

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error("usage: node scripts/generate.mjs OPENAPI_JSON OUTPUT_TS");
  process.exit(2);
}

const HEADER = `/**
 * GENERATED FILE: do not edit by hand.
 *
 * The types of the agents-api HTTP API, made by openapi-typescript from the OpenAPI
 * document that \`agents-api openapi\` prints. Regenerate from the repository root with
 *
 *     ./scripts/typescript-client.sh
 *
 * (\`./scripts/typescript-client.sh --check\`, part of ./scripts/test.sh, fails when this
 * file is stale).
 */

`;

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

const document = JSON.parse(await readFile(input, "utf8"));
for (const item of Object.values(document.paths ?? {})) {
  for (const method of METHODS) {
    if (item[method]) delete item[method].operationId;
  }
}

const BLOB = ts.factory.createTypeReferenceNode("Blob");
const NULL = ts.factory.createLiteralTypeNode(ts.factory.createNull());

const ast = await openapiTS(document, {
  silent: true,
  emptyObjectsUnknown: true,
  transform(schema) {
    if (schema.format !== "binary") return undefined;
    const nullable = Array.isArray(schema.type) ? schema.type.includes("null") : schema.nullable;
    return nullable ? ts.factory.createUnionTypeNode([BLOB, NULL]) : BLOB;
  },
});

await writeFile(output, HEADER + astToString(ast));
