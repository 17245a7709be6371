#!/usr/bin/env python3
"""The clients of bench/agent.sh (stdlib only). Every time is time.time_ns() (CLOCK_REALTIME),
the clock the fakes (bench/agent/fake_ai.py, fake_kommo.py) and PostgreSQL's now() use too.

  drive.py webhooks --url URL --count N --interval-ms MS --prefix P --out ROWS.json
      Posts N incoming-message webhooks (Kommo's form body, as tests/api/agent_runtime's
      `incoming_body`), one every MS ms, one keep-alive connection, each a new chat
      (chat-P-000123) on a new lead (LEAD_BASE + i) whose text carries the token
      P-000123; records when each was sent and when its 200 arrived, then waits (up to
      --wait-s) until the fake model has seen every token, and writes one row per message
      with the fakes' times (lead read, model request, note posted).
  drive.py chat --base URL --org ID --agent ID --token JWT --count N --prefix P --ai URL --out F
      N streamed test chats, one after the other, each on a new connection: records when
      the first `event:delta` bytes arrived and pairs it with the fake model's first token.
  drive.py report --rows ROWS.json [--jobs JOBS.tsv]
      The webhook rows' summary (JSON): overhead percentiles and, with the jobs' server
      timestamps (chat_id, epochs of the webhook job created/started/finished and the
      reply job created/started), where the time went.
"""
import argparse
import http.client
import json
import math
import re
import socket
import sys
import time
import urllib.parse
import urllib.request

LEAD_BASE = 90_000_000


def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a list; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(1, math.ceil(p / 100.0 * len(s)))
    return s[min(k, len(s)) - 1]


def stats(values):
    r = lambda v: None if v is None else round(v, 2)  # noqa: E731
    return {"n": len(values), "p50": r(pct(values, 50)), "p90": r(pct(values, 90)),
            "p99": r(pct(values, 99)), "max": r(max(values) if values else None),
            "min": r(min(values) if values else None),
            "mean": r(sum(values) / len(values) if values else None)}


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def incoming_body(message_id, chat_id, lead_id, text, account_id):
    fields = [
        ("message[add][0][id]", message_id),
        ("message[add][0][chat_id]", chat_id),
        ("message[add][0][talk_id]", "42"),
        ("message[add][0][contact_id]", "501"),
        ("message[add][0][text]", text),
        ("message[add][0][created_at]", str(int(time.time()))),
        ("message[add][0][type]", "incoming"),
        ("message[add][0][entity_type]", "lead"),
        ("message[add][0][entity_id]", str(lead_id)),
        ("message[add][0][author][id]", "ext-1"),
        ("message[add][0][author][type]", "external"),
        ("message[add][0][author][name]", "Ivan"),
        ("message[add][0][origin]", "telegram"),
        ("account[id]", str(account_id)),
        ("account[subdomain]", "bench"),
    ]
    return urllib.parse.urlencode(fields, quote_via=urllib.parse.quote)


def webhooks(a):
    url = urllib.parse.urlsplit(a.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "User-Agent": "amoCRM-Webhooks/3.0"}
    rows = []
    start = time.monotonic()
    for i in range(a.count):
        token = "%s-%06d" % (a.prefix, i)
        chat_id = "chat-%s-%06d" % (a.prefix, i)
        lead_id = LEAD_BASE + a.lead_offset + i
        body = incoming_body("m-" + token, chat_id, lead_id,
                             "Hello! How much is delivery to Berlin? " + token, a.account_id)
        sent = time.time_ns()
        conn.request("POST", url.path, body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        ok_at = time.time_ns()
        if response.status != 200 or b"accepted" not in answer:
            sys.exit("webhook %d: %d %s" % (i, response.status, answer[:300]))
        rows.append({"i": i, "token": token, "chat_id": chat_id, "lead_id": lead_id,
                     "sent_ns": sent, "ok_ns": ok_at})
        delay = start + (i + 1) * a.interval_ms / 1000.0 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    conn.close()
    # Every token seen by the model (or the deadline), then the fakes' records.
    deadline = time.monotonic() + a.wait_s
    while True:
        chats = get_json(a.ai + "/records")["chats"]
        missing = [r for r in rows if r["token"] not in chats]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # the last notes
    chats = get_json(a.ai + "/records")["chats"]
    kommo = get_json(a.kommo + "/records")
    for r in rows:
        seen = chats.get(r["token"], {}).get("arrivals", [])
        r["model_ns"] = seen[0] if seen else None
        r["model_requests"] = len(seen)
        r["lead_ns"] = kommo["leads"].get(str(r["lead_id"]))
        r["note_ns"] = kommo["notes"].get(str(r["lead_id"]))
    with open(a.out, "w") as f:
        json.dump(rows, f)
    print("%d webhooks posted, %d seen by the model" % (len(rows), sum(1 for r in rows if r["model_ns"])),
          file=sys.stderr)


def ms(a, b):
    return None if a is None or b is None else (b - a) / 1e6


def report(a):
    rows = json.load(open(a.rows))
    out = {"posted": len(rows),
           "seen": sum(1 for r in rows if r["model_ns"] is not None),
           "lost": sum(1 for r in rows if r["model_ns"] is None),
           "repeated": sum(1 for r in rows if r["model_requests"] > 1),
           "notes": sum(1 for r in rows if r["note_ns"] is not None)}

    def series(f):
        return [v for v in (f(r) for r in rows) if v is not None]

    out["webhook_ms"] = stats(series(lambda r: ms(r["sent_ns"], r["ok_ns"])))
    out["overhead_ms"] = stats(series(lambda r: ms(r["ok_ns"], r["model_ns"])))
    out["to_lead_ms"] = stats(series(lambda r: ms(r["ok_ns"], r["lead_ns"])))
    out["lead_to_model_ms"] = stats(series(lambda r: ms(r["lead_ns"], r["model_ns"])))
    out["model_to_note_ms"] = stats(series(lambda r: ms(r["model_ns"], r["note_ns"])))
    slowest = sorted((r for r in rows if r["model_ns"]), key=lambda r: r["ok_ns"] - r["model_ns"])[:5]
    out["slowest"] = [{"i": r["i"], "overhead_ms": round(ms(r["ok_ns"], r["model_ns"]), 1),
                       "to_lead_ms": ms(r["ok_ns"], r["lead_ns"])} for r in slowest]
    if a.jobs:
        jobs = {}
        for line in open(a.jobs):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 6:
                continue
            vals = [int(float(p) * 1e9) if p else None for p in parts[1:]]
            jobs[parts[0]] = dict(zip(["wh_created", "wh_started", "wh_finished", "rp_created", "rp_started"], vals))
        joined = [(r, jobs.get(r["chat_id"])) for r in rows]
        joined = [(r, j) for r, j in joined if j]
        out["jobs_joined"] = len(joined)

        def js(f):
            return stats([v for v in (f(r, j) for r, j in joined) if v is not None])

        out["split_ms"] = {
            "200_to_webhook_job_started": js(lambda r, j: ms(r["ok_ns"], j["wh_started"])),
            "webhook_job_run": js(lambda r, j: ms(j["wh_started"], j["wh_finished"])),
            "webhook_job_finished_to_reply_job_started": js(lambda r, j: ms(j["wh_finished"], j["rp_started"])),
            "reply_job_started_to_lead_read": js(lambda r, j: ms(j["rp_started"], r["lead_ns"])),
            "lead_read_to_model_request": js(lambda r, j: ms(r["lead_ns"], r["model_ns"])),
            "webhook_job_created_before_200": js(lambda r, j: ms(j["wh_created"], r["ok_ns"])),
        }
    json.dump(out, sys.stdout, indent=1)
    print()


DELTA = re.compile(rb"event: ?delta\r?\n")
END = re.compile(rb"event: ?(done|error)\r?\n")


def one_chat(a, token):
    body = json.dumps({"messages": [
        {"role": "user", "content": "How much is delivery to Berlin? " + token}]}).encode()
    path = "/v1/orgs/%s/agents/%s/test-chat" % (a.org, a.agent)
    url = urllib.parse.urlsplit(a.base)
    request = ("POST %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
               "Content-Length: %d\r\nConnection: close\r\n\r\n"
               % (path, url.hostname, url.port, a.token, len(body))).encode() + body
    s = socket.create_connection((url.hostname, url.port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = time.time_ns()
    s.sendall(request)
    buf = b""
    first_byte = first_delta = None
    while True:
        data = s.recv(65536)
        now = time.time_ns()
        if not data:
            break
        if first_byte is None:
            first_byte = now
        buf += data
        if first_delta is None and DELTA.search(buf):
            first_delta = now
        if END.search(buf):
            break
    s.close()
    status = buf.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        sys.exit("test chat %s: %s" % (token, buf[:300]))
    end = END.search(buf)
    return {"token": token, "sent_ns": sent, "first_byte_ns": first_byte, "delta_ns": first_delta,
            "end": end.group(1).decode() if end else None}


def chat(a):
    rows = []
    for i in range(a.count):
        rows.append(one_chat(a, "%s-%06d" % (a.prefix, i)))
        time.sleep(a.pause_ms / 1000.0)
    chats = get_json(a.ai + "/records")["chats"]
    for r in rows:
        r["first_token_ns"] = chats.get(r["token"], {}).get("first_token_ns")
        seen = chats.get(r["token"], {}).get("arrivals", [])
        r["model_ns"] = seen[0] if seen else None
    with open(a.out, "w") as f:
        json.dump(rows, f)
    gaps = [ms(r["first_token_ns"], r["delta_ns"]) for r in rows]
    gaps = [g for g in gaps if g is not None]
    out = {"requests": len(rows), "paired": len(gaps),
           "done": sum(1 for r in rows if r["end"] == "done"),
           "gap_ms": stats(gaps),
           "request_to_sources_ms": stats([v for v in (ms(r["sent_ns"], r["first_byte_ns"]) for r in rows) if v is not None]),
           "request_to_model_ms": stats([v for v in (ms(r["sent_ns"], r["model_ns"]) for r in rows) if v is not None])}
    json.dump(out, sys.stdout, indent=1)
    print()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("webhooks")
    w.add_argument("--url", required=True)
    w.add_argument("--count", type=int, default=300)
    w.add_argument("--interval-ms", type=float, default=500)
    w.add_argument("--prefix", required=True)
    w.add_argument("--lead-offset", type=int, default=0)
    w.add_argument("--account-id", type=int, required=True)
    w.add_argument("--ai", required=True)
    w.add_argument("--kommo", required=True)
    w.add_argument("--wait-s", type=float, default=60)
    w.add_argument("--out", required=True)
    c = sub.add_parser("chat")
    c.add_argument("--base", required=True)
    c.add_argument("--org", required=True)
    c.add_argument("--agent", required=True)
    c.add_argument("--token", required=True)
    c.add_argument("--count", type=int, default=200)
    c.add_argument("--pause-ms", type=float, default=20)
    c.add_argument("--prefix", required=True)
    c.add_argument("--ai", required=True)
    c.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("--rows", required=True)
    r.add_argument("--jobs")
    a = p.parse_args()
    {"webhooks": webhooks, "chat": chat, "report": report}[a.cmd](a)


if __name__ == "__main__":
    main()
