#!/usr/bin/env python3
"""A zero-latency fake Kommo for bench/agent.sh (stdlib only).

The server's KOMMO_BASE_URL is http://127.0.0.1:PORT/{base_domain}, so every path starts
with the account's host; any host is accepted. Only the bearer token given with --token
is authorized (401 otherwise, as Kommo does).

  GET  /{host}/api/v4/account            the account (--account-id)
  GET  /{host}/api/v4/leads/pipelines    one pipeline (--pipeline) with the stage (--stage)
  GET  /{host}/api/v4/contacts           204: no contacts (the sync queued on connect)
  GET  /{host}/api/v4/leads/{id}         any lead id: a lead in that pipeline and stage
  GET  /{host}/api/v4/leads/{id}/notes   204 (no notes yet: only a retried reply asks)
  POST /{host}/api/v4/leads/{id}/notes   stores nothing, answers ids
  GET  /{host}/api/v4/tasks              204
  POST /{host}/api/v4/tasks              answers ids
  GET  /records                          {"leads": {id: first GET ns}, "notes": {id: first POST ns},
                                          "requests": n, "unauthorized": n}
Times are time.time_ns() (CLOCK_REALTIME), the clock bench/agent/drive.py uses too.
"""
import argparse
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()
_records = {"leads": {}, "notes": {}, "requests": 0, "unauthorized": 0, "not_found": 0}
_next_id = [7_000_001]

LEAD = re.compile(r"^/api/v4/leads/(\d+)$")
NOTES = re.compile(r"^/api/v4/leads/(\d+)/notes$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the server's client reuses connections
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client\'s delayed ACK of the headers (40 ms on Linux) on every response.
    disable_nagle_algorithm = True
    account_id = 0
    pipeline = 0
    stage = 0
    token = ""

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body=None):
        self.send_response(status)
        if body is None:  # 204: no body and, as RFC 9110 asks, no Content-Length
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_header("Content-Type", "application/hal+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self, method):
        at = time.time_ns()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/records" and method == "GET":
            with _lock:
                return self.reply(200, _records)
        host, _, rest = path.lstrip("/").partition("/")
        rest = "/" + rest
        with _lock:
            _records["requests"] += 1
        if self.headers.get("Authorization") != "Bearer " + self.token:
            with _lock:
                _records["unauthorized"] += 1
            return self.reply(401, {"title": "Unauthorized", "status": 401,
                                    "detail": "Invalid access token"})
        base = "http://%s/%s" % (self.headers.get("Host", "127.0.0.1"), host)
        if method == "GET" and rest == "/api/v4/account":
            sub = host.split(".")[0]
            return self.reply(200, {
                "id": self.account_id, "name": sub.capitalize(), "subdomain": sub,
                "current_user_id": 777, "country": "US", "currency": "USD",
                "_links": {"self": {"href": base + "/api/v4/account"}}})
        if method == "GET" and rest == "/api/v4/leads/pipelines":
            statuses = [
                {"id": self.stage, "name": "Qualification", "sort": 10, "pipeline_id": self.pipeline,
                 "color": "#99ccff", "type": 0, "account_id": self.account_id},
                {"id": 142, "name": "Closed - won", "sort": 10000, "pipeline_id": self.pipeline,
                 "color": "#CCFF66", "type": 0, "account_id": self.account_id},
                {"id": 143, "name": "Closed - lost", "sort": 11000, "pipeline_id": self.pipeline,
                 "color": "#D5D8DB", "type": 0, "account_id": self.account_id},
            ]
            return self.reply(200, {"_total_items": 1, "_embedded": {"pipelines": [{
                "id": self.pipeline, "name": "Sales", "sort": 1, "is_main": True,
                "is_archive": False, "account_id": self.account_id,
                "_embedded": {"statuses": statuses}}]}})
        if method == "GET" and rest in ("/api/v4/contacts", "/api/v4/tasks"):
            return self.reply(204)
        m = LEAD.match(rest)
        if m and method == "GET":
            lead_id = int(m.group(1))
            with _lock:
                _records["leads"].setdefault(str(lead_id), at)
            return self.reply(200, {
                "id": lead_id, "name": "Order %d" % lead_id, "price": 1200,
                "responsible_user_id": 777, "group_id": 0, "status_id": self.stage,
                "pipeline_id": self.pipeline, "loss_reason_id": None, "created_by": 777,
                "updated_by": 777, "created_at": 1700000000, "updated_at": 1700000000,
                "closed_at": None, "closest_task_at": None, "is_deleted": False,
                "custom_fields_values": [{"field_name": "City", "values": [{"value": "Berlin"}]}],
                "score": None, "account_id": self.account_id, "labor_cost": None,
                "_links": {"self": {"href": base + rest}},
                "_embedded": {"tags": [], "companies": []}})
        m = NOTES.match(rest)
        if m and method == "GET":
            return self.reply(204)
        if (m and method == "POST") or (method == "POST" and rest == "/api/v4/tasks"):
            try:
                items = json.loads(raw or b"[]")
            except ValueError:
                items = []
            if not isinstance(items, list) or not items:
                return self.reply(400, {"title": "Bad Request", "status": 400})
            with _lock:
                first = _next_id[0]
                _next_id[0] += len(items)
                if m:
                    _records["notes"].setdefault(m.group(1), at)
            kind = "notes" if m else "tasks"
            answered = [{"id": first + i, "request_id": str(i)} for i in range(len(items))]
            if m:
                for a in answered:
                    a["entity_id"] = int(m.group(1))
            return self.reply(200, {"_embedded": {kind: answered}})
        with _lock:
            _records["not_found"] += 1
        return self.reply(404, {"title": "Not Found", "status": 404})

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", required=True, help="the access token Kommo accepts")
    p.add_argument("--account-id", type=int, required=True)
    p.add_argument("--pipeline", type=int, required=True)
    p.add_argument("--stage", type=int, required=True)
    a = p.parse_args()
    Handler.token = a.token
    Handler.account_id = a.account_id
    Handler.pipeline = a.pipeline
    Handler.stage = a.stage
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    print("fake Kommo on http://127.0.0.1:%d/{base_domain}" % a.port, file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
