"""Tabular I/O for every command: Parquet (a file or a folder of files), CSV and CSV.gz, by extension.

Reads come whole (`read_table`) or streamed in record batches (`iter_batches`) with memory bounded by the
batch size. Every write is atomic: a temporary file beside the destination, fsync, then `os.replace`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mlops_cli.errors import EmptyInput, MissingFile, OutputExists, SchemaMismatch, UnreadableFile
from mlops_cli.interrupts import commit_window

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

FORMATS = ("parquet", "csv")


def detect_format(path: Path, fmt: str | None = None) -> str:
    """The format of `path`: the --format override, else its extension (a folder means Parquet)."""
    if fmt:
        if fmt not in FORMATS:
            raise UnreadableFile(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
        return fmt
    name = path.name.lower()
    if name.endswith(".parquet") or path.is_dir():
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    raise UnreadableFile(
        f"{path}: unknown file type", "use .parquet, a folder of .parquet files, .csv or .csv.gz, or pass --format"
    )


def _files(path: Path) -> list[Path]:
    """The data files behind `path`: itself, or the Parquet files of a folder in name order."""
    if not path.exists():
        raise MissingFile(f"{path}: no such file or folder", "check the path")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file() and not p.name.startswith((".", "_")))
        if not files:
            raise EmptyInput(f"{path}: folder holds no .parquet files", "point at a Parquet file or a folder of them")
        return files
    if path.stat().st_size == 0:
        raise EmptyInput(f"{path}: file is empty", "check that the job that writes it finished")
    return [path]


def parts(path: Path) -> list[Path]:
    """The files behind `path`: itself, or a folder's Parquet files in name order (what `iter_batches` reads)."""
    return _files(path)


def part_rows(path: Path) -> list[tuple[Path, int]]:
    """(file, rows) for each Parquet file behind `path`, in `parts` order, from the footers alone."""
    return [(f, _open_parquet(f).metadata.num_rows) for f in _files(path)]


def row_count(path: Path, fmt: str | None = None) -> int | None:
    """Rows of a Parquet file or folder, from the footers alone; None for CSV (known only once it is read)."""
    if detect_format(path, fmt) != "parquet":
        return None
    return sum(_open_parquet(f).metadata.num_rows for f in _files(path))


def _open_parquet(file: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # pre_buffer=False: with pre-buffering, read-ahead buffers stay alive across iter_batches and memory
        # grows with the file size instead of the batch size.
        return pq.ParquetFile(file, pre_buffer=False)
    except (pa.ArrowException, OSError) as exc:
        raise UnreadableFile(f"{file}: not a readable Parquet file ({_first_line(exc)})", "re-create the file") from exc


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a damaged file raises while it is read: Arrow's errors, the OS's (a truncated .gz), the codec's."""
    import pyarrow as pa

    return (pa.ArrowException, OSError, UnicodeDecodeError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _csv_reader(file: Path, column_types: dict[str, Any] | None, columns: list[str] | None) -> Any:
    import pyarrow.csv as pacsv

    convert = pacsv.ConvertOptions(
        column_types=column_types or {}, include_columns=columns or [], strings_can_be_null=True
    )
    try:
        # One thread, 1 MiB blocks: the threaded reader reads ahead without bound and memory grows with the file
        # (measured: 436 MB at 0.5M rows, 705 MB at 4M); single-threaded it stays flat and, here, is no slower.
        read = pacsv.ReadOptions(block_size=1 << 20, use_threads=False)
        return pacsv.open_csv(file, read_options=read, convert_options=convert)
    except _read_errors() as exc:
        raise UnreadableFile(f"{file}: not a readable CSV file ({_first_line(exc)})", "check the file") from exc


def schema(path: Path, fmt: str | None = None) -> pa.Schema:
    """The Arrow schema of the data at `path`, read without loading the rows (CSV: from its first block)."""
    file = _files(path)[0]
    if detect_format(path, fmt) == "parquet":
        return _open_parquet(file).schema_arrow
    try:
        return _csv_reader(file, None, None).schema
    except _read_errors() as exc:
        raise UnreadableFile(f"{file}: not a readable CSV file ({_first_line(exc)})", "check the file") from exc


def iter_batches(
    path: Path,
    *,
    batch_size: int = 100_000,
    columns: list[str] | None = None,
    column_types: dict[str, Any] | None = None,
    fmt: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream record batches of at most `batch_size` rows. Memory is bounded by the batch, not the file."""
    kind = detect_format(path, fmt)
    for file in _files(path):
        try:
            if kind == "parquet":
                pf = _open_parquet(file)
                yield from pf.iter_batches(batch_size=batch_size, columns=_present(pf, columns))
            else:
                yield from _rebatch(_csv_reader(file, column_types, columns), batch_size)
        except _read_errors() as exc:
            raise UnreadableFile(f"{file}: cannot read ({_first_line(exc)})", "check the file") from exc


def _rebatch(reader: Any, batch_size: int) -> Iterator[pa.RecordBatch]:
    """CSV blocks are sized in bytes; cut them into batches of exactly `batch_size` rows (the last may be short)."""
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in reader:
        pending.append(batch)
        rows += batch.num_rows
        while rows >= batch_size:
            table = pa.Table.from_batches(pending)
            yield from table.slice(0, batch_size).combine_chunks().to_batches()
            rest = table.slice(batch_size)
            pending, rows = rest.combine_chunks().to_batches(), rest.num_rows
    if rows:
        yield from pa.Table.from_batches(pending).combine_chunks().to_batches()


def read_table(
    path: Path, *, columns: list[str] | None = None, fmt: str | None = None, allow_empty: bool = False
) -> pd.DataFrame:
    """Read the whole file into a DataFrame (Arrow strings become Python objects, as scikit-learn expects)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    files = _files(path)
    try:
        if detect_format(path, fmt) == "csv":
            # Whole-file reads infer each column's type from all blocks (the streaming reader only sees the first).
            convert = pacsv.ConvertOptions(include_columns=columns or [], strings_can_be_null=True)
            tables = [pacsv.read_csv(f, convert_options=convert) for f in files]
        else:
            tables = [_open_parquet(f).read(columns=_present(_open_parquet(f), columns)) for f in files]
        _same_columns(files, tables)
        # Permissive: an int column in one part and a float column in another become float, as one file would hold.
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except _read_errors() as exc:
        raise UnreadableFile(f"{path}: cannot read ({_first_line(exc)})", "check the file") from exc
    if table.num_rows == 0 and not allow_empty:
        raise EmptyInput(f"{path}: has no rows", "check that the job that writes it finished")
    return to_pandas(table)


def read_parts(files: list[Path], *, columns: list[str] | None = None) -> tuple[pd.DataFrame, list[Part]]:
    """Parquet files that may differ in columns (a prediction log across model versions) as one frame, in order: a
    column a file lacks is null in its rows. Also, per file, its rows, columns and key-value metadata (what the
    writer recorded beside the rows). Unlike `read_table`, no file is refused for its columns."""
    import pyarrow as pa

    tables, info = [], []
    for file in files:
        pf = _open_parquet(file)
        try:
            table = pf.read(columns=_present(pf, columns))
        except _read_errors() as exc:
            raise UnreadableFile(f"{file}: cannot read ({_first_line(exc)})", "check the file") from exc
        meta = {k.decode(): v.decode() for k, v in (pf.metadata.metadata or {}).items() if not k.startswith(b"ARROW")}
        tables.append(table)
        info.append(Part(file, table.num_rows, tuple(pf.schema_arrow.names), meta))
    if not tables:
        return to_pandas(pa.table({c: pa.array([], pa.null()) for c in columns or []})), []
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as exc:  # the same column with types that do not meet (text in one, numbers in another)
        raise SchemaMismatch(f"{files[0].parent}: the files' columns do not agree ({_first_line(exc)})") from exc
    return to_pandas(table), info


@dataclass(frozen=True)
class Part:
    path: Path
    rows: int
    columns: tuple[str, ...]
    metadata: dict[str, str]


def _same_columns(files: list[Path], tables: list[pa.Table]) -> None:
    """The parts of a folder are one table: a part with other columns is refused, not filled with nulls."""
    first = set(tables[0].column_names)
    for file, table in zip(files[1:], tables[1:], strict=True):
        names = set(table.column_names)
        if names != first:
            missing, extra = sorted(first - names), sorted(names - first)
            raise SchemaMismatch(
                f"{file}: its columns differ from {files[0].name}'s"
                + (f" (lacks {missing})" if missing else "")
                + (f" (has extra {extra})" if extra else ""),
                "every Parquet file of a folder must have the same columns",
            )


def _present(pf: Any, columns: list[str] | None) -> list[str] | None:
    return [c for c in columns if c in pf.schema_arrow.names] if columns is not None else None


def to_pandas(data: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    """One Arrow-to-pandas conversion for the whole tool: strings as object columns, nullable ints as floats."""
    import pandas as pd

    # ignore_metadata: pandas' own metadata would bring back nullable extension types (Int8) that sklearn dislikes.
    frame = data.to_pandas(ignore_metadata=True)
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.StringDtype):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def fingerprint(path: Path, rows: int | None = None) -> dict[str, Any]:
    """sha256 of the file (or of a folder's files, in name order), its size and row count: the lineage record."""
    files = _files(path)
    digest = hashlib.sha256()
    size = 0
    for file in files:
        if len(files) > 1:
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        size += file.stat().st_size
    if rows is None and detect_format(path) == "parquet":
        rows = sum(_open_parquet(f).metadata.num_rows for f in files)
    return {"path": str(path), "sha256": digest.hexdigest(), "bytes": size, "rows": rows}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- writing -------------------------------------------------------------------------------------------------


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output that exists (without --overwrite) or whose folder is missing."""
    if path.is_dir():
        raise OutputExists(f"{path} is a folder", "name a file to write")
    if path.exists() and not overwrite:
        raise OutputExists(f"{path} already exists", "pass --overwrite to replace it, or choose another path")
    if not path.parent.is_dir():
        raise MissingFile(f"{path.parent}: output folder does not exist", "create it first")


def check_output_dir(path: Path, overwrite: bool) -> None:
    """`check_output` for an output that is a folder of parts (--engine dask)."""
    if path.exists() and not overwrite:
        raise OutputExists(f"{path} already exists", "pass --overwrite to replace it, or choose another path")
    if not path.parent.is_dir():
        raise MissingFile(f"{path.parent}: output folder does not exist", "create it first")


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` whole, on failure it is removed.

    With overwrite=False the commit is a hard link, which fails if `path` appeared meanwhile (two cron runs writing
    one output): the later run gets OutputExists instead of silently replacing the earlier run's file.
    """
    tmp: Path | None = None
    try:
        with commit_window():  # a signal now would leave a temporary file no one removes: wait until `tmp` is set
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            tmp = Path(tmp_name)
            try:
                os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the mode `open` would give
            finally:
                os.close(fd)
        yield tmp
    except BaseException:
        if tmp is not None:
            with commit_window():
                tmp.unlink(missing_ok=True)
        raise
    # The commit is one step: a signal arriving now waits for the rename (or the clean-up) to finish.
    with commit_window():
        try:
            with tmp.open("rb+") as fh:
                fh.flush()
                os.fsync(fh.fileno())
            if overwrite:
                os.replace(tmp, path)
            else:
                _link_new(tmp, path)
            fsync_dir(path.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _link_new(tmp: Path, path: Path) -> None:
    """Give `tmp` the name `path` only if nothing has that name, then drop `tmp`."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExists(
            f"{path} appeared while this run was writing it (another run?)", "nothing was replaced; check the other run"
        ) from None
    except OSError:  # a file system without hard links: check, then rename (a narrow window, but a window)
        if path.exists():
            raise OutputExists(f"{path} appeared while this run was writing it", "nothing was replaced") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def remove_tree(path: Path) -> None:
    """Remove a folder that other processes may still be writing into (a cancelled Dask task finishing its part):
    their new files make rmdir fail, so try again a few times."""
    import shutil
    import time

    for attempt in range(20):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if attempt == 19:
                raise
            time.sleep(0.05 * (attempt + 1))


@contextlib.contextmanager
def atomic_dir(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden folder beside `path` to fill; on success it becomes `path` by one rename, on failure (or a
    signal) it is removed, and `path` stays as it was.

    With overwrite, the previous `path` (file or folder) is first renamed aside and removed after the new one is in
    place: between the two renames, inside one commit window, `path` is briefly absent; a crash exactly there leaves
    the previous output in `.NAME.*.old`, never a half-written one at `path`.
    """
    tmp: Path | None = None
    try:
        with commit_window():
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
            os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
    except BaseException:
        if tmp is not None:
            with commit_window():
                remove_tree(tmp)
        raise
    with commit_window():
        old: Path | None = None
        moved = False
        try:
            fsync_dir(tmp)
            if path.exists() or path.is_symlink():
                if not overwrite:
                    raise OutputExists(
                        f"{path} appeared while this run was writing it (another run?)", "nothing was replaced"
                    )
                old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
                os.replace(path, old / "previous")
                moved = True
            os.rename(tmp, path)
            fsync_dir(path.parent)
        except BaseException:
            if moved:  # put the previous output back
                with contextlib.suppress(OSError):
                    os.replace(old / "previous", path)  # type: ignore[operator]
            remove_tree(tmp)
            if old is not None:
                remove_tree(old)
            raise
        if old is not None:
            remove_tree(old)


def write_atomic(path: Path, write: Callable[[IO[bytes]], object], *, overwrite: bool = True) -> None:
    """Write `path` whole or not at all (with overwrite=False, never over a file that exists)."""
    with atomic_path(path, overwrite=overwrite) as tmp, tmp.open("wb") as fh:
        write(fh)


def dumps_json(obj: Any) -> str:
    """Strict JSON: keys sorted, NaN and Inf as null, numpy scalars and paths as plain values."""
    return json.dumps(_plain(obj), sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def read_toml(path: Path, hint: str) -> dict[str, Any]:
    """A policy file the user wrote: missing or unparseable is one line and exit 3."""
    import tomllib

    if not path.is_file():
        raise MissingFile(f"{path}: no such file", "check the path")
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UnreadableFile(f"{path}: not valid TOML ({exc})", hint) from exc


def write_json(path: Path, obj: Any, *, overwrite: bool = True) -> None:
    text = dumps_json(obj).encode()
    write_atomic(path, lambda fh: fh.write(text), overwrite=overwrite)


def _plain(obj: Any) -> Any:
    import math

    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [_plain(v) for v in items]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalar
        return _plain(obj.item())
    if hasattr(obj, "tolist"):  # numpy array
        return _plain(obj.tolist())
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


def write_table(path: Path, frame: pd.DataFrame, fmt: str | None = None) -> None:
    """Write a DataFrame atomically as Parquet or CSV (by extension)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    with TableWriter(path, table.schema, fmt=fmt) as writer:
        writer.write(table)


class TableWriter:
    """Incremental, atomic table writer: batches go to a temporary file that replaces `path` only on close.

    Used as a context manager; leaving it with an exception (or a kill) never touches `path`.
    """

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        fmt: str | None = None,
        *,
        parquet_options: dict[str, Any] | None = None,
        overwrite: bool = True,
    ) -> None:
        self.path = path
        self.schema = schema
        self.format = detect_format(path, fmt)
        self.parquet_options = parquet_options or {}  # passed to pyarrow's ParquetWriter (ignored for CSV)
        self._atomic = atomic_path(path, overwrite=overwrite)
        self._writer: Any = None
        self._stream: Any = None
        self.committed = False  # True once `path` holds the finished table

    def __enter__(self) -> TableWriter:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        tmp = self._atomic.__enter__()
        if self.format == "parquet":
            self._writer = pq.ParquetWriter(tmp, self.schema, **self.parquet_options)
        else:
            compression = "gzip" if self.path.name.lower().endswith(".gz") else None
            self._stream = (
                pa.CompressedOutputStream(str(tmp), compression) if compression else pa.OSFile(str(tmp), "wb")
            )
            self._writer = pacsv.CSVWriter(self._stream, self.schema)
        return self

    def annotate(self, metadata: dict[str, str]) -> None:
        """Key-value metadata for the Parquet footer, written at close (CSV has nowhere to keep it)."""
        if self.format == "parquet":
            self._writer.add_key_value_metadata(metadata)

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        import pyarrow as pa

        if isinstance(data, pa.RecordBatch):
            self._writer.write_batch(data)
        else:
            self._writer.write_table(data)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Closing (the Parquet footer) and the rename are one step, and so is discarding: a signal waits for it.
        with commit_window():
            try:
                self._writer.close()
                if self._stream is not None:
                    self._stream.close()
            except BaseException as close_error:
                # A file that failed to close is incomplete: discard it like any other failure.
                if exc is None:
                    exc_type, exc, tb = type(close_error), close_error, close_error.__traceback__
                self._atomic.__exit__(exc_type, exc, tb)
                raise
            self._atomic.__exit__(exc_type, exc, tb)
            self.committed = exc is None


class Background:
    """Runs `fn(*args)` in a daemon thread, for an input's sha256 while its rows are read and scored (hashlib and
    file reads release the GIL); `result()` waits for it and re-raises its error. A daemon: Ctrl-C never waits."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # handed to the main thread by result()
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
