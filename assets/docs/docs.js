// Renders the OpenAPI document of this service as a readable reference. Plain DOM code,
// no external assets: the page's Content-Security-Policy allows only this origin.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    if (child == null) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function resolve(doc, schema) {
  let seen = 0;
  while (schema && schema.$ref && seen++ < 20) {
    const name = schema.$ref.split("/").pop();
    schema = (doc.components && doc.components.schemas || {})[name] || {};
  }
  return schema || {};
}

// A compact, JSON-like picture of a schema (depth-limited, cycles cut).
function shape(doc, schema, depth) {
  schema = resolve(doc, schema);
  if (depth > 4) return "…";
  const variants = schema.oneOf || schema.anyOf;
  if (variants) return variants.map((s) => shape(doc, s, depth + 1)).join(" | ");
  const type = Array.isArray(schema.type) ? schema.type.filter((t) => t !== "null")[0] : schema.type;
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (type === "array") return [shape(doc, schema.items || {}, depth + 1)];
  if (type === "object" || schema.properties) {
    const out = {};
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      const required = (schema.required || []).includes(name);
      out[name + (required ? "" : "?")] = shape(doc, prop, depth + 1);
    }
    return out;
  }
  return (type || "any") + (schema.format ? ` (${schema.format})` : "");
}

function schemaBlock(doc, content) {
  if (!content) return null;
  const [mediaType, media] = Object.entries(content)[0] || [];
  if (!media) return null;
  return el("div", {}, el("div", {}, mediaType),
    el("pre", {}, JSON.stringify(shape(doc, media.schema || {}, 0), null, 2)));
}

function operation(doc, path, method, op) {
  const body = el("div", { class: "body" });
  if (op.description) body.append(el("p", {}, op.description));
  if (op.security && op.security.length) body.append(el("p", { class: "lock" }, "Requires a bearer access token."));
  const params = op.parameters || [];
  if (params.length) {
    const rows = params.map((p) => el("tr", {},
      el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", {}, p.required ? "required" : "optional"),
      el("td", {}, p.description || "")));
    body.append(el("h4", {}, "Parameters"), el("table", {}, ...rows));
  }
  if (op.requestBody) body.append(el("h4", {}, "Request body"), schemaBlock(doc, op.requestBody.content));
  const responses = Object.entries(op.responses || {});
  if (responses.length) {
    body.append(el("h4", {}, "Responses"));
    for (const [status, response] of responses) {
      body.append(el("div", {}, el("strong", {}, status + " "), response.description || ""),
        schemaBlock(doc, response.content));
    }
  }
  return el("details", { id: `${method}-${path}` },
    el("summary", {}, el("span", { class: `method ${method}` }, method.toUpperCase()),
      el("span", { class: "path" }, path), el("span", {}, op.summary || "")),
    body);
}

async function main() {
  const response = await fetch("/v1/openapi.json");
  const doc = await response.json();
  document.getElementById("summary").textContent =
    `${doc.info.description || ""} OpenAPI ${doc.openapi}, version ${doc.info.version}.`;
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of ["get", "post", "put", "patch", "delete"]) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(doc, path, method, op));
    }
  }
  const main = document.getElementById("operations");
  const toc = document.getElementById("toc");
  for (const [tag, ops] of byTag) {
    toc.append(el("a", { href: `#tag-${tag}` }, tag));
    main.append(el("h2", { id: `tag-${tag}` }, tag), ...ops);
  }
}

main().catch((error) => {
  document.getElementById("summary").textContent = `Could not load the document: ${error}`;
});
