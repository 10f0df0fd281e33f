"""The demo's client for `mlops serve`: sends flights one per request from 8 threads for a few seconds, optionally
promotes another version part-way through, and prints what came back: status codes and the versions that answered.

    python sample_data/serve_client.py URL ROWS.parquet --wait-ready
    python sample_data/serve_client.py URL ROWS.parquet --seconds 4 --promote-after-s 1 --promote flights:2 \
        --labels-out labels.parquet

Each request sends one row with an id (`q<n>`, unique per request). --labels-out writes the ids answered and their
rows' `delayed` outcome: the labels that "arrive later" for `mlops monitor --labels ... --on id`.

Exit 1 if any request failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import subprocess
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import pyarrow.parquet as pq


def _rows(path: str, n: int) -> list[dict]:
    rows = []
    for record in pq.read_table(path).slice(0, n).to_pylist():
        row = {}
        for key, value in record.items():
            if hasattr(value, "isoformat"):
                value = value.isoformat()
            if isinstance(value, float) and math.isnan(value):
                value = None
            row[key] = value
        rows.append(row)
    return rows


def _post(host: str, port: int, row: dict, row_id: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        body = json.dumps({"rows": [row], "ids": [row_id]}).encode()
        connection.request("POST", "/predict", body, {"content-type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("x-model-version") or "-"
    finally:
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("rows")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--promote", help="NAME:VERSION to promote to production part-way through")
    parser.add_argument("--promote-after-s", type=float, default=1.0)
    parser.add_argument("--wait-ready", action="store_true", help="only wait until /readyz answers 200")
    parser.add_argument("--labels-out", help="write the answered ids and their outcomes here (Parquet)")
    args = parser.parse_args()
    address = urlsplit(args.url)
    host, port = address.hostname or "127.0.0.1", address.port or 80

    if args.wait_ready:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection(host, port, timeout=5)
                connection.request("GET", "/readyz")
                if connection.getresponse().status == 200:
                    print(f"{args.url} is ready")
                    return 0
            except OSError:
                pass
            time.sleep(0.2)
        print(f"{args.url} did not become ready", file=sys.stderr)
        return 1

    rows = _rows(args.rows, 1_000)
    results: list[tuple[int, str]] = []
    answered: list[tuple[str, object]] = []
    lock = threading.Lock()
    start = time.monotonic()
    end = start + args.seconds

    def work(offset: int) -> None:
        i = offset
        while time.monotonic() < end:
            row = rows[i % len(rows)]
            result = _post(host, port, row, f"q{i}")
            with lock:
                results.append(result)
                if result[0] == 200:
                    answered.append((f"q{i}", row.get("delayed")))
            i += args.threads

    threads = [threading.Thread(target=work, args=(k,)) for k in range(args.threads)]
    for t in threads:
        t.start()
    if args.promote:
        time.sleep(args.promote_after_s)
        print(f"  promoting {args.promote} to production while requests run")
        subprocess.run(["mlops", "models", "promote", args.promote, "production", "-q"], check=True)
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    statuses = Counter(status for status, _ in results)
    versions = Counter(version for _, version in results)
    print(f"  {len(results)} requests in {seconds:.1f} s from {args.threads} threads")
    print(f"  status codes: {dict(sorted(statuses.items()))}")
    print(f"  answered by version: {dict(sorted(versions.items()))}")
    if args.labels_out:
        import pyarrow as pa

        labels = {"id": [i for i, _ in answered], "delayed": [y for _, y in answered]}
        pq.write_table(pa.table(labels), args.labels_out)
        print(f"  labels of {len(answered)} answered rows: {args.labels_out}")
    return 0 if set(statuses) == {200} else 1


if __name__ == "__main__":
    raise SystemExit(main())
