"""The monitor's input: a window of the prediction log (or of any file with score-batch's columns), the labels
that arrived later joined to it, and the service levels read off it."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_cli import io
from mlops_cli.errors import EmptyInput, InputError, InvalidData, SchemaMismatch
from mlops_cli.online.predlog import DROPPED_KEY
from mlops_cli.scoring import REASON_COLUMN

if TYPE_CHECKING:
    import pandas as pd

TIME = "received_at"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DAY_FOLDER = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Window:
    """[since, until) in UTC. `explicit`: the user asked for it (a file without timestamps cannot honour it)."""

    since: dt.datetime
    until: dt.datetime
    explicit: bool = True

    def as_dict(self) -> dict[str, str]:
        return {"since": _iso(self.since), "until": _iso(self.until)}


def parse_duration(text: str) -> dt.timedelta:
    """`90m`, `24h`, `7d`, `1w`, `3600s`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration: a number and a unit s, m, h, d or w, such as 24h")
    return dt.timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 (`2026-12-03`, `2026-12-03T04:00`, with `Z` or an offset); without a zone, UTC."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time, such as 2026-12-03T04:00Z") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def window(last: str | None, since: str | None, until: str | None, *, now: dt.datetime | None = None) -> Window:
    """`--window D` (the last D), `--since T [--until T]`, `--until T` (the D before it) or by default the last 24h."""
    if last is not None and since is not None and until is not None:
        raise ValueError("give --window, or --since and --until, not all three")
    span = parse_duration(last) if last is not None else dt.timedelta(hours=24)
    end = parse_time(until) if until is not None else (now or dt.datetime.now(dt.UTC))
    start = parse_time(since) if since is not None else end - span
    if start >= end:
        raise ValueError(f"the window is empty: since {_iso(start)} is not before until {_iso(end)}")
    return Window(start, end, explicit=any(v is not None for v in (last, since, until)))


def read_window(logs: Path, win: Window, fmt: str | None = None) -> tuple[pd.DataFrame, dict[str, Any], list[str]]:
    """The window's rows, what was read, and messages. A log folder's day folders outside the window are not read;
    a file without a `received_at` column is one window as a whole (refused when a window was asked for)."""
    import pandas as pd

    messages: list[str] = []
    if logs.is_dir() and io.detect_format(logs, fmt) == "parquet":
        try:
            files = [f for f in io.parts(logs) if _may_overlap(f, logs, win)]
        except EmptyInput:  # a server that has answered nothing yet: a window of no rows, not an error
            files = []
        frame, parts = io.read_parts(files)
    else:
        frame, parts = io.read_table(logs, fmt=fmt, allow_empty=True), []
    source = {"path": str(logs), "files": len(parts) or 1, "rows_read": len(frame)}
    if TIME in frame.columns:
        times = pd.to_datetime(frame[TIME], utc=True)
        inside = ((times >= win.since) & (times < win.until)).to_numpy()
        frame = frame[inside]
    elif win.explicit:
        raise InputError(f"{logs}: no {TIME!r} column, so no window can be taken", "leave out --window/--since/--until")
    else:
        inside = None
        messages.append(f"{logs}: no {TIME!r} column: every row is in the window")
    # A file's footer records the rows the server dropped before it was published: counted when the file is in.
    source["dropped_log_rows"] = _dropped(parts, inside)
    return frame.reset_index(drop=True), source, messages


def _may_overlap(file: Path, root: Path, win: Window) -> bool:
    """A file under LOG_DIR/<UTC date>/ holds rows of that date (and a rotation's worth of the next)."""
    folder = file.parent
    if folder == root or not _DAY_FOLDER.fullmatch(folder.name):
        return True
    day = dt.date.fromisoformat(folder.name)
    return win.since.date() - dt.timedelta(days=1) <= day <= win.until.date()


def _dropped(parts: list[io.Part], inside: Any) -> int:
    import numpy as np

    total, start = 0, 0
    for part in parts:
        rows = slice(start, start + part.rows)
        start += part.rows
        taken = part.rows == 0 or inside is None or bool(np.any(inside[rows]))
        if taken:
            total += int(part.metadata.get(DROPPED_KEY, "0") or 0)
    return total


@dataclass(frozen=True)
class Labels:
    """Labels that arrived later: FILE's COLUMN, joined on ON (the request id, or an id column)."""

    path: Path
    column: str
    on: str = "request_id"


def join_labels(frame: pd.DataFrame, labels: Labels, fmt: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """`frame` with the label column filled where a key matches. Keys compare as text (a CSV's 17 is the log's
    "17"). Ambiguity is refused: a key twice in the labels, or a label key shared by several logged rows (a
    request of many rows: join by an id column instead)."""
    table = io.read_table(labels.path, fmt=fmt)
    for column in (labels.on, labels.column):
        if column not in table.columns:
            raise SchemaMismatch(f"{labels.path}: no column {column!r}", "check --on and --label-column")
    if labels.on not in frame.columns:
        raise SchemaMismatch(f"the log has no column {labels.on!r} to join the labels on", "check --on")
    table = table[table[labels.column].notna() & table[labels.on].notna()]
    keys = table[labels.on].astype(str)
    if keys.duplicated().any():
        twice = keys[keys.duplicated()].iloc[0]
        raise InvalidData(
            f"{labels.path}: {int(keys.duplicated().sum()):,} keys of {labels.on!r} appear more than once "
            f"(such as {twice!r})",
            "give one label per key",
        )
    logged = frame[labels.on].astype(str).where(frame[labels.on].notna(), None)
    values = dict(zip(keys, table[labels.column], strict=True))
    matched = logged.isin(values.keys())
    shared = logged[matched].duplicated(keep=False)
    if shared.any():
        raise InvalidData(
            f"{int(shared.sum()):,} logged rows share a labelled {labels.on!r} with another row (requests of "
            "several rows)",
            "give each row an id (the request's ids) and join on it with --on",
        )
    out = frame.copy()
    out[labels.column] = logged.map(values).where(matched, None)
    info = {
        "path": str(labels.path),
        "column": labels.column,
        "on": labels.on,
        "labels": len(table),
        "matched_rows": int(matched.sum()),
    }
    return out, info


LATENCY_QUANTILES = (0.5, 0.95, 0.99)


def service_levels(frame: pd.DataFrame) -> dict[str, Any]:
    """Volume, latency, invalid rows, routes and versions of the window. Latency is per request (each row of a
    request carries its request's latency), so a request of 1,000 rows counts once."""
    import numpy as np

    rows = len(frame)
    out: dict[str, Any] = {"rows": rows, "requests": None, "latency_seconds": None}
    if "request_id" in frame.columns:
        out["requests"] = int(frame["request_id"].nunique())
    if "latency_ms" in frame.columns and rows:
        per_request = frame.drop_duplicates("request_id") if "request_id" in frame.columns else frame
        latency = per_request["latency_ms"].to_numpy(dtype=float)
        latency = latency[np.isfinite(latency)] / 1000.0
        if latency.size:
            quantiles = np.quantile(latency, LATENCY_QUANTILES)
            out["latency_seconds"] = {
                f"p{round(q * 100)}": float(v) for q, v in zip(LATENCY_QUANTILES, quantiles, strict=True)
            }
    if REASON_COLUMN in frame.columns:
        invalid = frame[REASON_COLUMN].notna()
        out["invalid_rows"] = int(invalid.sum())
        out["invalid_share"] = float(invalid.mean()) if rows else None
        out["invalid_by_reason"] = {str(k): int(v) for k, v in frame.loc[invalid, REASON_COLUMN].value_counts().items()}
    for column, key in (("route", "route_shares"), ("model_version", "version_shares")):
        if column in frame.columns and rows:
            shares = frame[column].astype(str).value_counts(normalize=True).sort_index()
            out[key] = {str(k): float(v) for k, v in shares.items()}
    if TIME in frame.columns and rows:
        times = frame[TIME]
        out["first"], out["last"] = _iso(times.min()), _iso(times.max())
    return out


def _iso(value: Any) -> str:
    return value.replace(microsecond=0).isoformat().replace("+00:00", "Z")
