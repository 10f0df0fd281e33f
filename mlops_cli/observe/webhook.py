"""Deliver alert notices to a webhook: Slack, Alertmanager's webhook (version 4) shape, or plain JSON.

One POST per run carries every notice. Delivery is bounded: a connect timeout, a read timeout, retries with
exponential backoff on connection errors, timeouts, 5xx and 429 (waiting what Retry-After asks, when it fits), and
a total time budget no retry outlives. Nothing here ever puts the URL (it holds a secret) in a message.
http.client, not urllib: urllib has one timeout for connect and read, and follows redirects (with the body).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mlops_cli import __version__
from mlops_cli.observe.alerts import Notice

FORMATS = ("slack", "alertmanager", "json")
NO_END = "0001-01-01T00:00:00Z"  # what Alertmanager sends as endsAt of an alert still firing


@dataclass(frozen=True)
class Policy:
    """How hard to try. `total_s` bounds everything, waits included."""

    connect_s: float = 5.0
    read_s: float = 10.0
    total_s: float = 30.0
    attempts: int = 5
    backoff_s: float = 0.5  # first wait; doubles each retry
    max_backoff_s: float = 8.0


@dataclass(frozen=True)
class Result:
    ok: bool
    attempts: int
    status: int | None  # the last HTTP status, None when none came back
    error: str | None  # why it failed, without the URL
    seconds: float


def check_url(url: str) -> str | None:
    """Why `url` cannot be a webhook (without quoting it), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "it must be an http:// or https:// URL"
    return None


def post(url: str, body: bytes, policy: Policy = Policy(), *, sleep: Callable[[float], None] = time.sleep) -> Result:
    """POST `body` (JSON) to `url`, retrying what may succeed later, within `policy.total_s`."""
    start = time.monotonic()
    deadline = start + policy.total_s
    status: int | None = None
    error: str | None = None
    attempt = 0
    while attempt < policy.attempts:
        attempt += 1
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        retry_after: float | None = None
        try:
            status, retry_after = _once(url, body, policy, remaining)
        except TimeoutError:
            status, error = None, "timed out"
        except (OSError, http.client.HTTPException) as exc:
            status, error = None, _describe(exc)
        else:
            if 200 <= status < 300:
                return Result(True, attempt, status, None, time.monotonic() - start)
            error = f"HTTP {status}"
            if status != 429 and status < 500:
                break  # the receiver refused this payload: sending it again changes nothing
        wait = min(policy.backoff_s * 2 ** (attempt - 1), policy.max_backoff_s)
        if retry_after is not None:
            wait = max(wait, retry_after)
        if attempt >= policy.attempts or time.monotonic() + wait >= deadline:
            if retry_after is not None and time.monotonic() + retry_after >= deadline:
                error = f"{error}; Retry-After {retry_after:g}s is past the {policy.total_s:g}s budget"
            break
        sleep(wait)
    return Result(False, attempt, status, error, time.monotonic() - start)


def _once(url: str, body: bytes, policy: Policy, remaining: float) -> tuple[int, float | None]:
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=min(policy.connect_s, remaining))
    try:
        connection.connect()
        if connection.sock is not None:
            connection.sock.settimeout(min(policy.read_s, max(0.001, remaining)))
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/json", "User-Agent": f"mlops/{__version__}"}
        if parts.username or parts.password:
            import base64

            token = base64.b64encode(f"{parts.username or ''}:{parts.password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(1 << 16)  # drain a little, so the server is not cut off mid-answer
        return response.status, _retry_after(response.getheader("Retry-After"))
    finally:
        connection.close()


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: either delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(exc: BaseException) -> str:
    """A connection error in words that cannot hold the URL (InvalidURL and friends quote it)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(exc, ConnectionError):
        return "connection lost"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


# --- payloads ---------------------------------------------------------------------------------------------------


def payload(fmt: str, notices: list[Notice]) -> bytes:
    """The body for one delivery of `notices`, in `fmt` (slack, alertmanager or json)."""
    if fmt == "slack":
        data: Any = {"text": "\n".join(_slack_line(n) for n in notices)}
    elif fmt == "alertmanager":
        data = _alertmanager(notices)
    elif fmt == "json":
        data = {"source": "mlops", "alerts": [_plain(n) for n in notices]}
    else:
        raise ValueError(f"unknown alert format {fmt!r}")
    return json.dumps(data, sort_keys=True, allow_nan=False).encode()


_EMOJI = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}


def _slack_line(notice: Notice) -> str:
    a = notice.alert
    mark = ":white_check_mark:" if notice.status == "resolved" else _EMOJI[a.severity]
    state = "RESOLVED" if notice.status == "resolved" else a.severity.upper()
    model = f" {notice.model}" if notice.model else ""
    return f"{mark} [{state}] mlops {notice.command}{model}: {a.name}: {a.summary}"


def _annotations(notice: Notice) -> dict[str, str]:
    a = notice.alert
    out = {"summary": a.summary}
    if a.value is not None:
        out["value"] = f"{a.value:g}"
    if a.threshold is not None:
        out["threshold"] = f"{a.threshold:g}"
    return out


def _alertmanager(notices: list[Notice]) -> dict[str, Any]:
    """Alertmanager's webhook_config body (version 4), so receivers written for Alertmanager take it as is."""
    alerts = [
        {
            "status": n.status,
            "labels": n.labels,
            "annotations": _annotations(n),
            "startsAt": n.starts_at,
            "endsAt": n.ends_at or NO_END,
            "generatorURL": "",
            "fingerprint": n.fingerprint,
        }
        for n in notices
    ]
    labels = [n.labels for n in notices]
    common = {k: v for k, v in labels[0].items() if all(other.get(k) == v for other in labels)}
    group = {k: common[k] for k in ("command", "model") if k in common}
    return {
        "version": "4",
        "groupKey": "{}:{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in group.items()) + "}",
        "truncatedAlerts": 0,
        "status": "firing" if any(n.status == "firing" for n in notices) else "resolved",
        "receiver": "mlops",
        "groupLabels": group,
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": alerts,
    }


def _plain(notice: Notice) -> dict[str, Any]:
    a = notice.alert
    return {
        "name": a.name,
        "severity": a.severity,
        "status": notice.status,
        "summary": a.summary,
        "value": _finite(a.value),
        "threshold": _finite(a.threshold),
        "model": notice.model,
        "command": notice.command,
        "starts_at": notice.starts_at,
        "ends_at": notice.ends_at,
        "fingerprint": notice.fingerprint,
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
