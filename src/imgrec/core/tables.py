"""Results tables: one row per image, as ``imgrec predict --csv`` and ``--out`` write them.

The columns are ``image``, then ``class_k`` and ``probability_k`` for each of the top K
classes, then ``time_ms`` and ``error`` (:func:`result_columns`); an image that could
not be classified has only ``image`` and ``error``. The same rows go to a CSV file, a
Parquet file or JSON lines:

- CSV text cells pass through :func:`text_cell`, so that no spreadsheet runs a file or
  class name as a formula; numbers are written as numbers (``0.712345``, ``12.345``);
  a missing value is an empty cell.
- Parquet has typed columns (strings and float64) and nulls for missing values.
- JSON lines hold one object per row, ``null`` for missing values.

:class:`ResultsFile` writes a table as its rows come, so that a killed run keeps what
it finished, and reads back which images a table already holds (``--resume``). CSV
and JSON lines are appended to and flushed to disk chunk by chunk (a row cut short by
a kill is dropped when the run resumes). A Parquet file cannot be appended to, so its
rows go to complete part files in a folder beside it (``results.parquet.parts/``, each
written atomically), which :meth:`ResultsFile.close` merges into the file. Parquet
needs pyarrow (``pip install 'imgrec[ray]'``); nothing here imports Keras.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from imgrec.core.errors import ImgrecError
from imgrec.core.storage import atomic_path

# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV
# injection"): a file named "=1+2.jpg" must not become one.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# The formats of an output table, by the file's extension.
TABLE_FORMATS = (".parquet", ".csv", ".jsonl")

# A Parquet part is written when this many rows wait, or when the oldest waited this long.
PARQUET_PART_ROWS = 5000
PARQUET_PART_SECONDS = 30.0

# csv.writer ends rows with "\r\n"; a file that does not end so lost its last row to a kill.
_CSV_ROW_END = "\r\n"


def text_cell(text: str) -> str:
    """``text`` for a CSV cell that no spreadsheet takes for a formula: a leading ``'``
    where it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def result_columns(top: int) -> list[str]:
    """The columns of a results table: image, class_k and probability_k, time_ms, error."""
    columns = ["image"]
    for rank in range(1, top + 1):
        columns += [f"class_{rank}", f"probability_{rank}"]
    return [*columns, "time_ms", "error"]


def result_row(record: dict, top: int) -> dict[str, Any]:
    """One record of ``imgrec.predict`` as a table row; ``None`` where a value is missing.

    Args:
        record: ``image`` and ``top`` (the ranked classes) and ``time_ms``, or
            ``image`` and ``error``.
        top: the K of the table's columns; a record with fewer classes leaves the
            rest ``None``.
    """
    row: dict[str, Any] = dict.fromkeys(result_columns(top))
    row["image"] = record["image"]
    for rank, entry in enumerate(record.get("top", [])[:top], start=1):
        row[f"class_{rank}"] = entry["class"]
        row[f"probability_{rank}"] = float(entry["probability"])
    if "time_ms" in record:
        row["time_ms"] = float(record["time_ms"])
    row["error"] = record.get("error")
    return row


def csv_cells(row: dict[str, Any]) -> list[str]:
    """A table row as CSV cells: text through :func:`text_cell`, numbers formatted,
    ``""`` for a missing value."""
    cells = []
    for column, value in row.items():
        if value is None:
            cells.append("")
        elif column.startswith("probability_"):
            cells.append(f"{value:.6f}")
        elif column == "time_ms":
            cells.append(f"{value:.3f}")
        else:
            cells.append(text_cell(str(value)))
    return cells


def predictions_csv(results: list[dict], top: int) -> str:
    """One CSV row per image: its top classes with probabilities, time and error.

    Text cells (image, class names, error) pass through :func:`text_cell`; numbers
    are written as numbers.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(result_columns(top))
    for result in results:
        writer.writerow(csv_cells(result_row(result, top)))
    return out.getvalue()


def table_format(path: str | os.PathLike) -> str:
    """The format of an output table from its extension: ``.parquet``, ``.csv`` or ``.jsonl``.

    Raises:
        ImgrecError: any other extension.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ImgrecError(
            f"{path}: results go to a {', '.join(TABLE_FORMATS[:-1])} or "
            f"{TABLE_FORMATS[-1]} file (by its extension)"
        )
    return suffix


def parts_folder(path: str | os.PathLike) -> Path:
    """Where the Parquet parts of a results table wait until the run ends."""
    return Path(f"{os.fspath(path)}.parts")


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImgrecError(
            "Parquet results need pyarrow: pip install 'imgrec[ray]' (or pip install pyarrow)"
        ) from None
    return pyarrow


def arrow_schema(top: int) -> Any:
    """The Parquet (Arrow) schema of a results table: strings and float64, all nullable."""
    pa = _pyarrow()
    return pa.schema(
        [
            (c, pa.float64() if c.startswith("probability_") or c == "time_ms" else pa.string())
            for c in result_columns(top)
        ]
    )


class ResultsFile:
    """A results table that grows as rows come and keeps them through a kill.

    Args:
        path: the table, ``.parquet``, ``.csv`` or ``.jsonl``.
        top: the K of its columns.
        resume: when ``path`` (or parts a killed run left) exists, keep its rows and
            add to it; :meth:`missing` then says which images it lacks. Without
            ``resume`` an existing table is refused rather than overwritten.

    Raises:
        ImgrecError: an unknown extension; the table exists and ``resume`` is off; or
            it has other columns (another ``top``) or cannot be read.
    """

    def __init__(self, path: str | os.PathLike, top: int, *, resume: bool = False) -> None:
        self.path = Path(path)
        self.format = table_format(path)
        self.top = top
        self.columns = result_columns(top)
        self.written = 0
        self._waiting: list[dict[str, Any]] = []
        self._since = time.monotonic()
        if self.format == ".parquet":
            _pyarrow()
        exists = self.path.exists() or parts_folder(self.path).is_dir()
        if exists and not resume:
            raise ImgrecError(
                f"{self.path} exists: --resume adds only the images it lacks; "
                "remove it to start again"
            )
        self._done = self._read_done() if exists else set()

    def missing(self, images: Iterable[str]) -> list[str]:
        """The images of ``images`` that the table has no row for, in their order."""
        if self.format == ".csv":
            return [image for image in images if text_cell(image) not in self._done]
        return [image for image in images if image not in self._done]

    @property
    def rows_before(self) -> int:
        """How many images the table held when it was opened."""
        return len(self._done)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Add rows (dicts with the table's columns); they reach the disk before this
        returns, but for Parquet, whose rows wait for a part of their own."""
        self._waiting.extend({c: row.get(c) for c in self.columns} for row in rows)
        if self.format != ".parquet" or (
            len(self._waiting) >= PARQUET_PART_ROWS
            or time.monotonic() - self._since >= PARQUET_PART_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        """Write the rows that wait: appended to a CSV or JSON-lines file, or as a part."""
        rows, self._waiting, self._since = self._waiting, [], time.monotonic()
        if self.format != ".parquet" and not self.path.exists():
            # Created with the first rows (or by close): a run that fails before any
            # leaves no file behind to refuse the next one.
            self._append_text(self._csv_text([self.columns]) if self.format == ".csv" else "")
        if not rows:
            return
        if self.format == ".csv":
            self._append_text(self._csv_text([csv_cells(row) for row in rows]))
        elif self.format == ".jsonl":
            self._append_text("".join(json.dumps(row) + "\n" for row in rows))
        else:
            self._write_part(rows)
        self.written += len(rows)

    def close(self) -> None:
        """Write what waits; for Parquet, merge the table and its parts into one file."""
        self.flush()
        if self.format == ".parquet":
            self._merge_parts()

    # --- CSV and JSON lines -------------------------------------------------------------

    @staticmethod
    def _csv_text(rows: list[list[str]]) -> str:
        out = io.StringIO()
        csv.writer(out).writerows(rows)
        return out.getvalue()

    def _append_text(self, text: str) -> None:
        with self.path.open("a", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def _read_done(self) -> set[str]:
        if self.format == ".parquet":
            return self._read_parquet_done()
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ImgrecError(f"{self.path}: cannot read it to resume ({err})") from err
        end = _CSV_ROW_END if self.format == ".csv" else "\n"
        rows = self._csv_rows(text) if self.format == ".csv" else self._json_rows(text)
        first = 1 if self.format == ".csv" else 0  # a CSV file's header row
        if not text.endswith(end):
            if text and len(rows) > first:
                rows = rows[:-1]  # cut short by a kill: it is classified again
            self._rewrite(rows)
        return {row[0] for row in rows[1:]} if self.format == ".csv" else set(rows)

    def _csv_rows(self, text: str) -> list[list[str]]:
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if rows and rows[0] != self.columns:
            raise self._other_columns(rows[0])
        return rows or [self.columns]

    def _json_rows(self, text: str) -> list[str]:
        images = []
        lines = text.split("\n")
        complete = lines[:-1]
        for number, line in enumerate(complete, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ImgrecError(f"{self.path}, line {number}: not a JSON row ({err})") from err
            if list(row) != self.columns:
                raise self._other_columns(list(row))
            images.append(row["image"])
        if lines[-1]:
            images.append(lines[-1])  # the partial last line: dropped by the caller
        return images

    def _rewrite(self, rows: list) -> None:
        """The table without its partial last row (atomically)."""
        if self.format == ".csv":
            text = self._csv_text(rows)
        else:
            lines = self.path.read_text(encoding="utf-8").split("\n")[:-1]
            text = "".join(line + "\n" for line in lines)
        with atomic_path(self.path) as tmp:
            tmp.write_text(text, encoding="utf-8", newline="")

    def _other_columns(self, found: list[str]) -> ImgrecError:
        return ImgrecError(
            f"{self.path}: its columns ({', '.join(found[:4])}, ...) are not those of "
            f"--top {self.top}; resume with the --top it was written with"
        )

    # --- Parquet ------------------------------------------------------------------------

    def _parquet_files(self) -> list[Path]:
        parts = parts_folder(self.path)
        found = sorted(parts.glob("part-*.parquet")) if parts.is_dir() else []
        return [self.path, *found] if self.path.exists() else found

    def _read_parquet_done(self) -> set[str]:
        pq = _pyarrow().parquet
        done: set[str] = set()
        for path in self._parquet_files():
            try:
                names = pq.read_schema(path).names
                if names != self.columns:
                    raise self._other_columns(names)
                done.update(pq.read_table(path, columns=["image"])["image"].to_pylist())
            except OSError as err:  # pyarrow's ArrowInvalid is an OSError's sibling
                raise ImgrecError(f"{path}: cannot read it to resume ({err})") from err
            except ValueError as err:
                raise ImgrecError(f"{path}: cannot read it to resume ({err})") from err
        return done

    def _write_part(self, rows: list[dict[str, Any]]) -> None:
        pa = _pyarrow()
        parts = parts_folder(self.path)
        parts.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.stem.split("-")[1]) for p in parts.glob("part-*.parquet")]
        target = parts / f"part-{max(numbers, default=-1) + 1:06d}.parquet"
        with atomic_path(target) as tmp:
            pa.parquet.write_table(pa.Table.from_pylist(rows, schema=arrow_schema(self.top)), tmp)

    def _merge_parts(self) -> None:
        files = self._parquet_files()
        if files == [self.path]:
            return  # no new rows
        pa = _pyarrow()
        schema = arrow_schema(self.top)
        with atomic_path(self.path) as tmp, pa.parquet.ParquetWriter(tmp, schema) as writer:
            # An empty run still leaves a table with the columns.
            writer.write_table(schema.empty_table())
            for path in files:
                writer.write_table(pa.parquet.read_table(path, schema=schema))
        shutil.rmtree(parts_folder(self.path), ignore_errors=True)
