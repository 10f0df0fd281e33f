"""Tabular I/O: formats, streaming, errors that name the file, atomic writes."""

import gzip
import json
import math
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CURRENT, CURRENT_CSV

from mlops_cli import io
from mlops_cli.errors import EmptyInput, MissingFile, OutputExists, UnreadableFile


def test_parquet_csv_and_gzip_csv_read_the_same_rows(tmp_path):
    parquet = io.read_table(CURRENT)
    csv = io.read_table(CURRENT_CSV)
    gz = tmp_path / "current.csv.gz"
    with CURRENT_CSV.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    csv_gz = io.read_table(gz)
    assert len(parquet) == len(csv) == len(csv_gz) == 30_000
    for column in ("carrier", "temp", "distance"):
        pd.testing.assert_series_equal(parquet[column], csv[column], check_dtype=False)
        pd.testing.assert_series_equal(csv[column], csv_gz[column])
    assert parquet["carrier"].dtype == object  # strings as Python objects, as scikit-learn expects


def test_folder_of_parquet_files_reads_in_name_order(tmp_path):
    frame = io.read_table(CURRENT)
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, start in enumerate(range(0, len(frame), 7_000)):
        frame.iloc[start : start + 7_000].to_parquet(folder / f"part-{i:03d}.parquet")
    (folder / "_SUCCESS").write_text("")  # markers that writers leave are ignored
    back = io.read_table(folder)
    pd.testing.assert_frame_equal(back.reset_index(drop=True), frame.reset_index(drop=True), check_dtype=False)


@pytest.mark.parametrize("path", [CURRENT, CURRENT_CSV])
def test_iter_batches_yields_exact_batch_sizes(path):
    sizes = [b.num_rows for b in io.iter_batches(path, batch_size=4_096)]
    assert sum(sizes) == 30_000
    assert all(s == 4_096 for s in sizes[:-1]) and 0 < sizes[-1] <= 4_096


def test_iter_batches_selects_columns():
    batch = next(io.iter_batches(CURRENT, batch_size=10, columns=["temp", "carrier"]))
    assert sorted(batch.schema.names) == ["carrier", "temp"]


def test_missing_file(tmp_path):
    with pytest.raises(MissingFile, match="no such file"):
        io.read_table(tmp_path / "nope.parquet")


@pytest.mark.parametrize("name", ["empty.parquet", "empty.csv"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(EmptyInput, match=name):
        io.read_table(tmp_path / name)


def test_parquet_with_no_rows_is_empty_input(tmp_path):
    path = tmp_path / "none.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.float64())}), path)
    with pytest.raises(EmptyInput, match="no rows"):
        io.read_table(path)
    assert io.read_table(path, allow_empty=True).columns.tolist() == ["a"]


def test_corrupt_parquet_names_the_file(tmp_path):
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(CURRENT.read_bytes()[:5_000])  # truncated: no footer
    with pytest.raises(UnreadableFile, match="corrupt.parquet: not a readable Parquet file"):
        io.read_table(path)


def test_unparseable_csv(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")  # a row with too many fields
    with pytest.raises(UnreadableFile, match="bad.csv"):
        io.read_table(path)


def test_unknown_extension_and_format_override(tmp_path):
    path = tmp_path / "data.txt"
    shutil.copy(CURRENT_CSV, path)
    with pytest.raises(UnreadableFile, match="unknown file type"):
        io.read_table(path)
    assert len(io.read_table(path, fmt="csv")) == 30_000


def test_write_atomic_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"

    def explode(fh):
        fh.write(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        io.write_atomic(target, explode)
    assert list(tmp_path.iterdir()) == []


def test_table_writer_failure_keeps_previous_file(tmp_path):
    target = tmp_path / "out.parquet"
    io.write_table(target, pd.DataFrame({"x": [1.0, 2.0]}))
    before = target.read_bytes()
    table = pa.table({"x": [3.0]})
    with pytest.raises(RuntimeError), io.TableWriter(target, table.schema) as writer:
        writer.write(table)
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".csv.gz"])
def test_write_table_round_trips(tmp_path, suffix):
    frame = pd.DataFrame({"x": [1.5, np.nan, 3.0], "s": ["a", None, "c"]})
    path = tmp_path / f"t{suffix}"
    io.write_table(path, frame)
    back = io.read_table(path)
    assert back["x"].iloc[0] == 1.5 and math.isnan(back["x"].iloc[1])
    assert back["s"].tolist() == ["a", None, "c"]


def test_strict_json_has_sorted_keys_and_no_nan():
    text = io.dumps_json({"b": float("nan"), "a": [np.float64(1.5), np.int64(2), float("inf")]})
    assert json.loads(text) == {"a": [1.5, 2, None], "b": None}
    assert text.index('"a"') < text.index('"b"')


def test_check_output(tmp_path):
    existing = tmp_path / "x.json"
    existing.write_text("{}")
    with pytest.raises(OutputExists):
        io.check_output(existing, overwrite=False)
    io.check_output(existing, overwrite=True)
    with pytest.raises(MissingFile):
        io.check_output(tmp_path / "no" / "x.json", overwrite=False)


def test_fingerprint_is_stable_and_counts_rows():
    a, b = io.fingerprint(CURRENT), io.fingerprint(CURRENT)
    assert a == b and a["rows"] == 30_000 and len(a["sha256"]) == 64


def test_csv_whose_column_type_changes_after_the_first_block(tmp_path):
    path = tmp_path / "late-float.csv"
    path.write_text("a,b\n" + "1,x\n" * 400_000 + "1.5,y\n")  # past pyarrow's first 1 MB block
    frame = io.read_table(path)
    assert frame["a"].dtype == np.float64 and frame["a"].iloc[-1] == 1.5


def test_damaged_csv_files_are_input_errors(tmp_path):
    whole = gzip.compress(CURRENT_CSV.read_bytes())
    truncated = tmp_path / "t.csv.gz"
    truncated.write_bytes(whole[: len(whole) // 3])
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"a,b,caf\xe9\n1,0,1\n")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 40)
    for path in (truncated, latin, binary):
        for read in (io.read_table, lambda p: list(io.iter_batches(p))):
            with pytest.raises(UnreadableFile, match=path.name):
                read(path)


def test_folder_parts_with_different_columns_are_refused(tmp_path):
    from mlops_cli.errors import SchemaMismatch

    folder = tmp_path / "parts.parquet"
    folder.mkdir()
    io.write_table(folder / "a.parquet", pd.DataFrame({"x": [1.0], "y": [2.0]}))
    io.write_table(folder / "b.parquet", pd.DataFrame({"x": [3.0]}))
    with pytest.raises(SchemaMismatch, match=r"b.parquet.*lacks \['y'\]"):
        io.read_table(folder)
