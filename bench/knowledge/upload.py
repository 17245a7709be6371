#!/usr/bin/env python3
"""One upload of bench/knowledge.sh, timed from the client and sampled for memory.

  upload.py --base URL --org ORG --token TOKEN --file PATH --type MIME --pid SERVER_PID

1. Resets the server's peak RSS (VmHWM) by writing 5 to /proc/PID/clear_refs (Linux
   >= 4.0, same user or root; if that is refused, VmHWM is the peak since the start and
   only the sampled VmRSS is specific to this upload).
2. t0, then `curl -F file=@PATH;type=MIME` POST {base}/v1/orgs/{org}/knowledge/assets
   (the real multipart upload), must answer 202 with {asset, job}.
3. Polls GET …/knowledge/assets/{id} every --poll-ms (20) over one keep-alive
   connection until `status` is `indexed` (or `failed`: exit 1), sampling the server's
   VmRSS every 5 ms meanwhile (from t0 on, the upload included).
4. Reads GET …/jobs/{job_id} for the job's own timestamps.

Prints one JSON object: client_s (t0 -> the poll that saw `indexed`), upload_s (curl's
time_total), server-side durations from the timestamps the API returns, the sampled
RSS peak and VmHWM (kB), the asset and the job.
"""
import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from urllib.parse import urlsplit


def ts(value):
    """An RFC 3339 timestamp of the API as epoch seconds (None stays None)."""
    if not value:
        return None
    value = value.replace("Z", "+00:00")
    # Python before 3.11 accepts only 3 or 6 fraction digits: pad or cut to 6.
    if "." in value:
        head, rest = value.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        tz = rest[len(digits):]
        value = head + "." + (digits + "000000")[:6] + tz
    return datetime.fromisoformat(value).timestamp()


def status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--org", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--type", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--poll-ms", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=300.0)
    a = p.parse_args()

    try:
        with open("/proc/%d/clear_refs" % a.pid, "w") as f:
            f.write("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False

    url = "%s/v1/orgs/%s/knowledge/assets" % (a.base, a.org)
    body = tempfile.NamedTemporaryFile(prefix="kb-upload-", suffix=".json", delete=False)
    body.close()
    rss_max = status_kb(a.pid, "VmRSS")
    t0 = time.time()
    curl = subprocess.Popen(
        ["curl", "-sS", "-o", body.name, "-w", "%{http_code} %{time_total}",
         "-H", "Authorization: Bearer " + a.token,
         "-F", "file=@%s;type=%s" % (a.file, a.type), url],
        stdout=subprocess.PIPE)
    while curl.poll() is None:
        rss_max = max(rss_max, status_kb(a.pid, "VmRSS"))
        time.sleep(0.005)
    out = curl.stdout.read().decode().split()
    with open(body.name) as f:
        text = f.read()
    os.unlink(body.name)
    if curl.returncode != 0 or not out or out[0] != "202":
        sys.exit("upload failed: curl exit %s, HTTP %s: %s" % (curl.returncode, out, text[:500]))
    upload_s = float(out[1])
    uploaded = json.loads(text)
    asset_id, job_id = uploaded["asset"]["id"], uploaded["job"]["id"]

    parts = urlsplit(a.base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = {"Authorization": "Bearer " + a.token}

    def get(path):
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            sys.exit("GET %s: HTTP %d: %s" % (path, r.status, data[:500]))
        return json.loads(data)

    asset_path = "/v1/orgs/%s/knowledge/assets/%s" % (a.org, asset_id)
    polls = 0
    asset = None
    # The asset's progress as polled: when (its updated_at, the server's clock) it was
    # first seen in each stage, and the first and last embedded batch seen.
    stages = {}
    batches = []
    next_poll = time.time()
    while True:
        now = time.time()
        rss_max = max(rss_max, status_kb(a.pid, "VmRSS"))
        if now - t0 > a.timeout:
            sys.exit("not indexed after %.0f s: %s" % (a.timeout, json.dumps(asset)))
        if now >= next_poll:
            asset = get(asset_path)
            polls += 1
            seen = time.time()
            progress = asset.get("progress") or {}
            stage = progress.get("stage")
            stages.setdefault(stage, asset["updated_at"])
            if stage in ("embedding", "writing") and progress.get("done"):
                entry = (progress["done"], asset["updated_at"])
                if not batches or batches[-1] != entry:
                    batches.append(entry)
            if asset["status"] == "indexed":
                break
            if asset["status"] == "failed":
                sys.exit("indexing failed: %s" % json.dumps(asset))
            next_poll = now + a.poll_ms / 1000.0
        time.sleep(0.005)
    rss_max = max(rss_max, status_kb(a.pid, "VmRSS"))
    hwm = status_kb(a.pid, "VmHWM")
    # The job is marked succeeded just after the asset's last transaction.
    job_path = "/v1/orgs/%s/jobs/%s" % (a.org, job_id)
    job = get(job_path)
    while job["finished_at"] is None and time.time() - seen < 10:
        time.sleep(0.01)
        job = get(job_path)
    conn.close()

    def span(start, end):
        s, e = ts(start), ts(end)
        return None if s is None or e is None else round(e - s, 4)

    timeline = {"chunking_at": ts(stages.get("chunking")), "started_at": ts(job["started_at"])}
    if batches:
        timeline.update(first_batch_done=batches[0][0], first_batch_at=ts(batches[0][1]),
                        last_batch_done=batches[-1][0], last_batch_at=ts(batches[-1][1]))
    print(json.dumps({
        "client_s": round(seen - t0, 4),
        "upload_s": upload_s,
        "polls": polls,
        # created_at/updated_at of the asset: now() of the upload's and of the finishing
        # transaction (transaction start times).
        "asset_s": span(asset["created_at"], asset["updated_at"]),
        "queue_s": span(job["created_at"], job["started_at"]),
        "job_s": span(job["started_at"], job["finished_at"]),
        "job_total_s": span(job["created_at"], job["finished_at"]),
        "rss_peak_kb": rss_max,
        "hwm_kb": hwm,
        "hwm_reset": hwm_reset,
        "timeline": timeline,
        "asset": asset,
        "job": job,
    }))


if __name__ == "__main__":
    main()
