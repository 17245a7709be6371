#!/usr/bin/env python3
"""A zero-latency OpenAI-compatible model for bench/agent.sh that records when it is asked
(stdlib only; bench/knowledge/fake_ai.py with timestamps and a timed stream).

  POST /v1/chat/completions
       Records time.time_ns() when the request's headers have been read (the "model
       request arrived" of the runtime-overhead row) under the token found in the last
       user message (`bench-msg-000123`, `bench-chat-000007`: the first match of
       `bench-[a-z]+-[0-9]+`). Answers at once with a short text and no tool call.
       With "stream": true: the status and headers at once, then, after --first-token-ms,
       the first content chunk (the time just before it is written is recorded as the
       token's first_token_ns), more chunks, the usage chunk and [DONE], in OpenAI's
       chat.completion.chunk format, chunked transfer encoding, TCP_NODELAY. A request
       with a response_format (the knowledge-graph extraction of an upload) is answered
       an empty graph, {"entities":[],"relationships":[]}.
  POST /v1/embeddings        deterministic unit vectors (for an upload on pgvector)
  GET  /records              {"chats": {token: {"arrivals": [ns...], "first_token_ns": ns}},
                              "untagged": n, "chat_requests": n, "embedding_requests": n}
"""
import argparse
import hashlib
import json
import math
import random
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = re.compile(r"bench-[a-z]+-[0-9]+")
ANSWER = ["Delivery to Berlin ", "costs 5 euros ", "and takes two days. ", "Anything else?"]
_lock = threading.Lock()
_records = {"chats": {}, "untagged": 0, "chat_requests": 0, "embedding_requests": 0}
_vectors = {}


def vector_json(text, dim):
    with _lock:
        table = _vectors.get(dim)
        if table is None:
            rng = random.Random(dim)
            table = []
            for _ in range(64):
                v = [rng.gauss(0.0, 1.0) for _ in range(dim)]
                norm = math.sqrt(sum(x * x for x in v)) or 1.0
                table.append("[" + ",".join("%.8f" % (x / norm) for x in v) + "]")
            _vectors[dim] = table
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return table[int.from_bytes(h, "little") % len(table)]


def content_text(message):
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def token_of(messages):
    """The bench token of the last user message (else of any message), or None."""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    for m in reversed(users or [m for m in messages if isinstance(m, dict)]):
        found = TOKEN.search(content_text(m))
        if found:
            return found.group(0)
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client\'s delayed ACK of the headers (40 ms on Linux) on every response.
    disable_nagle_algorithm = True
    first_token_s = 0.05
    chunk_s = 0.002

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.split("?", 1)[0].rstrip("/") in ("/records", "/v1/records"):
            with _lock:
                return self.reply(200, json.dumps(_records))
        if self.path.rstrip("/") == "/v1/models":
            return self.reply(200, json.dumps({"object": "list", "data": []}))
        self.reply(404, json.dumps({"error": {"message": "not found"}}))

    def do_POST(self):
        arrived = time.time_ns()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self.reply(400, json.dumps({"error": {"message": "the body is not JSON"}}))
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.endswith("/embeddings"):
            return self.embeddings(body)
        if path.endswith("/chat/completions"):
            return self.chat(body, arrived)
        self.reply(404, json.dumps({"error": {"message": "no such endpoint: " + path}}))

    def embeddings(self, body):
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        dim = int(body.get("dimensions") or 1536)
        parts = ['{"object":"embedding","index":%d,"embedding":%s}' % (i, vector_json(str(t), dim))
                 for i, t in enumerate(inputs or [])]
        with _lock:
            _records["embedding_requests"] += 1
        self.reply(200, '{"object":"list","data":[' + ",".join(parts) + '],"model":"fake",'
                   '"usage":{"prompt_tokens":1,"total_tokens":1}}')

    def chat(self, body, arrived):
        messages = body.get("messages") or []
        token = token_of(messages)
        with _lock:
            _records["chat_requests"] += 1
            if token is None:
                _records["untagged"] += 1
            else:
                entry = _records["chats"].setdefault(token, {"arrivals": [], "first_token_ns": None})
                entry["arrivals"].append(arrived)
        model = str(body.get("model", ""))
        prompt = sum(len(content_text(m)) // 4 for m in messages if isinstance(m, dict))
        usage = {"prompt_tokens": prompt, "completion_tokens": 12, "total_tokens": prompt + 12}
        if not body.get("stream"):
            # A structured answer (the graph extraction an upload queues) gets an empty graph.
            content = ('{"entities":[],"relationships":[]}' if body.get("response_format")
                       else "".join(ANSWER))
            return self.reply(200, json.dumps({
                "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": usage}))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(delta, finish=None, with_usage=False):
            c = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
                 "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if with_usage:
                c["usage"] = usage
            return "data: " + json.dumps(c) + "\n\n"

        def send(text):
            data = text.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        time.sleep(self.first_token_s)
        for i, piece in enumerate(ANSWER):
            if i == 0:
                delta = {"role": "assistant", "content": piece}
                if token is not None:
                    with _lock:
                        _records["chats"][token]["first_token_ns"] = time.time_ns()
            else:
                time.sleep(self.chunk_s)
                delta = {"content": piece}
            send(chunk(delta))
        send(chunk({}, "stop", with_usage=True))
        send("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--first-token-ms", type=float, default=50.0,
                   help="how long a stream waits before its first content chunk")
    a = p.parse_args()
    Handler.first_token_s = a.first_token_ms / 1000.0
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    print("fake model on http://127.0.0.1:%d/v1" % a.port, file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
