"""`mlops serve` as a real process for the tests: started on a free port, real HTTP on 127.0.0.1, real signals."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BANNER = re.compile(r"on http://[^:]+:(\d+) with")


class Server:
    def __init__(self, registry: Path, ref: str, *args: Any, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.log = tmp / f"serve-{time.monotonic_ns()}.log"
        self.tmp = tmp
        argv = [sys.executable, "-m", "mlops_cli", "--registry", str(registry), "serve", ref, "--port", "0"]
        environment = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), **(env or {})}
        with self.log.open("wb") as err:
            self.process = subprocess.Popen([*argv, *map(str, args)], stderr=err, env=environment)
        self.port = self._port()

    def _port(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = BANNER.search(self.log.read_text())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}: {self.log.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"the server did not start: {self.log.read_text()}")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"not ready within {timeout} s: {self.log.read_text()}")

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path, **kwargs)

    def post_json(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        status, got, raw = self.request(
            "POST", path, json.dumps(body).encode(), {"content-type": "application/json", **(headers or {})}
        )
        return status, got, json.loads(raw) if raw else None

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def rows_of(frame: Any) -> list[dict[str, Any]]:
    """A DataFrame's rows as JSON values (NaN as null, timestamps as ISO text), as a client would send them."""
    import math

    out = []
    for record in frame.to_dict(orient="records"):
        row = {}
        for key, value in record.items():
            if hasattr(value, "isoformat"):
                value = value.isoformat()
            elif hasattr(value, "item"):
                value = value.item()
            if isinstance(value, float) and math.isnan(value):
                value = None
            row[key] = value
        out.append(row)
    return out
