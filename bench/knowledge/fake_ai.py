#!/usr/bin/env python3
"""A zero-latency OpenAI-compatible endpoint for bench/knowledge.sh (stdlib only).

  POST /v1/embeddings        {model, input: str | [str], dimensions?}
       -> {"object": "list", "data": [{"object": "embedding", "index": i,
           "embedding": [...]}], "model": ..., "usage": {...}}
  POST /v1/chat/completions  -> one assistant message, content
       {"entities":[],"relationships":[]} (what the graph-extraction job asks for)
  GET  /stats                -> how many calls and inputs it answered
  GET  /table?dimensions=N   -> the TABLE vectors of size N, one a line in pgvector's
                                text form (bench/knowledge.sh seeds chunks near them)

Vectors are deterministic: each input text picks (by its BLAKE2 hash) one of TABLE unit
vectors of the requested dimension, drawn once from a seeded generator and kept already
formatted as JSON (10 decimals, like OpenAI's answers). So an answer costs the server
almost nothing but the request parsing and the copy of the bytes: "zero latency", while
the API still receives and decodes full-size answers (64 × 1536 floats ≈ 2 MB).
Without `dimensions` in the request (a model other than text-embedding-3-*), --dimensions.
"""
import argparse
import hashlib
import json
import math
import random
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TABLE = 1024
_tables = {}
_tables_lock = threading.Lock()
_stats = {"embedding_requests": 0, "embedding_inputs": 0, "chat_requests": 0, "errors": 0}
_stats_lock = threading.Lock()


def table(dim):
    with _tables_lock:
        t = _tables.get(dim)
        if t is None:
            rng = random.Random(dim)
            t = []
            for _ in range(TABLE):
                v = [rng.gauss(0.0, 1.0) for _ in range(dim)]
                norm = math.sqrt(sum(x * x for x in v)) or 1.0
                t.append("[" + ",".join("%.10f" % (x / norm) for x in v) + "]")
            _tables[dim] = t
        return t


def vector_json(text, dim):
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return table(dim)[int.from_bytes(h, "little") % TABLE]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the API's client reuses its connections
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client\'s delayed ACK of the headers (40 ms on Linux) on every response.
    disable_nagle_algorithm = True
    default_dim = 1536

    def log_message(self, fmt, *args):  # quiet: one line per request would cost more
        pass

    def reply(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def fail(self, status, message):
        with _stats_lock:
            _stats["errors"] += 1
        self.reply(status, json.dumps({"error": {"message": message, "type": "invalid_request_error"}}))

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path.rstrip("/") in ("/table", "/v1/table"):
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            try:
                dim = int(params.get("dimensions") or self.default_dim)
            except ValueError:
                return self.fail(400, "bad dimensions")
            if not 1 <= dim <= 16000:
                return self.fail(400, "bad dimensions")
            return self.reply(200, "\n".join(table(dim)) + "\n", "text/plain")
        if self.path.rstrip("/") in ("/stats", "/v1/stats"):
            with _stats_lock:
                self.reply(200, json.dumps(_stats))
        elif self.path.rstrip("/") == "/v1/models":
            self.reply(200, json.dumps({"object": "list", "data": []}))
        else:
            self.fail(404, "not found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self.fail(400, "the body is not JSON")
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.endswith("/embeddings"):
            return self.embeddings(body)
        if path.endswith("/chat/completions"):
            return self.chat(body)
        return self.fail(404, "no such endpoint: " + path)

    def embeddings(self, body):
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return self.fail(400, "input must be a string or a non-empty array")
        dim = int(body.get("dimensions") or self.default_dim)
        if not 1 <= dim <= 16000:
            return self.fail(400, "bad dimensions")
        tokens = 0
        parts = []
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else json.dumps(item)
            tokens += max(1, len(text) // 4)
            parts.append('{"object":"embedding","index":%d,"embedding":%s}' % (i, vector_json(text, dim)))
        model = json.dumps(str(body.get("model", "")))
        out = ('{"object":"list","data":[' + ",".join(parts) + '],"model":' + model
               + ',"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (tokens, tokens))
        with _stats_lock:
            _stats["embedding_requests"] += 1
            _stats["embedding_inputs"] += len(inputs)
        self.reply(200, out)

    def chat(self, body):
        content = json.dumps({"entities": [], "relationships": []})
        model = str(body.get("model", ""))
        prompt = sum(len(str(m.get("content", ""))) // 4 for m in body.get("messages", []) if isinstance(m, dict))
        with _stats_lock:
            _stats["chat_requests"] += 1
        if body.get("stream"):
            chunks = [
                {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": model,
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": None}]},
                {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": model,
                 "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": prompt, "completion_tokens": 8, "total_tokens": prompt + 8}},
            ]
            sse = "".join("data: " + json.dumps(c) + "\n\n" for c in chunks) + "data: [DONE]\n\n"
            return self.reply(200, sse, "text/event-stream")
        answer = {
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": 8, "total_tokens": prompt + 8},
        }
        self.reply(200, json.dumps(answer))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dimensions", type=int, default=1536, help="when a request names none")
    p.add_argument("--warm", default="", help="comma-separated dimensions to prepare at start")
    a = p.parse_args()
    Handler.default_dim = a.dimensions
    for d in filter(None, a.warm.split(",")):
        table(int(d))
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    print("fake AI endpoint on http://127.0.0.1:%d/v1" % a.port, file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
