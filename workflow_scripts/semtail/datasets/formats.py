"""Readers of the raw dataset formats. Each returns a DataFrame with columns user, item, rating in
the order of the raw file(s), raw ids kept as they are: integers for MovieLens and Netflix, strings
(as a pandas Categorical) for the Million Song Dataset and the generic `delimited` format. `rating`
is float32 and never NaN; for MSD it is the play count. A `delimited` file without a rating column
gives a frame without one: every row is a positive.

What a reader skips or drops (blank lines, non-finite ratings) it counts in `Anomalies`, which the
preprocess stage logs and writes into stats.json together with the ratings outside the format's
scale (RATING_SCALES), which are kept.

Row order matters: the split draws held-out items by position within each user's interactions, and
orders the item columns by first appearance. Delimited files keep their line order. Netflix rows are
ordered by movie id, then as listed in that movie's block, for both layouts of the data.

Parsing is vectorised (pyarrow); a malformed file is then scanned line by line to name the line.

A file cut short can still parse: `1,3,5.0,1` may be the start of `1,3,5.0,1427784002`. The genuine
delimited files (GroupLens's ratings.csv and u.data, RecBole's ml-100k.inter, the MSD triplets) all end
with a newline, so one that does not is refused as truncated. Netflix text is not known to always end
with one, so there a last line without a newline must be a complete `CustomerID,Rating,YYYY-MM-DD`;
likewise a `delimited` file (your own data: many complete files lack the final newline), whose last
line must parse whole.

The split writes ids one a line, so an id that holds a line break (a quoted field spanning lines, or
a character that Python's str.splitlines breaks at) is refused, naming its line.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from semtail.datasets import DataError

log = logging.getLogger(__name__)

NETFLIX_COMBINED_FILES = tuple(f"combined_data_{i}.txt" for i in range(1, 5))
NETFLIX_MOVIE_FILE = re.compile(r"mv_(\d+)\.txt")
NETFLIX_CHUNK_BYTES = 64 << 20
CSV_BLOCK_BYTES = 16 << 20
TAIL_BYTES = 64 << 10


class RawFormatError(DataError):
    pass


# The scale of each format's ratings: ratings outside it are counted and warned about, and kept (the
# split's threshold still decides). ML-100K has whole stars, 1 to 5; ML-20M half stars from 0.5, as
# RecBole's .inter files of the MovieLens sets may. MSD's "ratings" are play counts, at least 1.
RATING_SCALES: dict[str, tuple[float, float | None]] = {
    "ml-100k": (1.0, 5.0),
    "recbole-inter": (0.5, 5.0),
    "ml-20m": (0.5, 5.0),
    "netflix-tar": (1.0, 5.0),
    "netflix-combined": (1.0, 5.0),
    "msd-triplets": (1.0, None),
    "synthetic": (5.0, 5.0),
}


@dataclass
class Anomalies:
    """What reading skipped, dropped or found odd, by kind: how many, the first place, and what
    became of those rows. Filled by the readers and the preprocess stage, written into stats.json."""

    found: dict[str, dict] = field(default_factory=dict)

    def add(self, kind: str, count: int, first: str | None, action: str, **details) -> None:
        if count <= 0:
            return
        entry = self.found.setdefault(kind, {"count": 0, "first": first, "action": action})
        entry["count"] += int(count)
        entry.update(details)

    def as_dict(self) -> dict:
        return {kind: dict(entry) for kind, entry in self.found.items()}


@dataclass(frozen=True)
class Delimited:
    """A delimited text format: its separator, header line (if any) and columns."""

    delimiter: str
    columns: tuple[str, ...]  # all columns, in file order; user and item (and rating) among them
    header: tuple[str, ...] | None = None  # the exact header fields, when the file has a header line
    id_type: str = "int"  # "int", or "token" for string ids
    quoted: bool = False  # fields may be enclosed in double quotes
    final_newline: bool = True  # the genuine file ends with a newline: one without it looks truncated


ML_100K = Delimited("\t", ("user", "item", "rating", "timestamp"))
RECBOLE_INTER = Delimited(
    "\t",
    ("user", "item", "rating", "timestamp"),
    header=("user_id:token", "item_id:token", "rating:float", "timestamp:float"),
)
ML_20M = Delimited(",", ("user", "item", "rating", "timestamp"), header=("userId", "movieId", "rating", "timestamp"))
MSD_TRIPLETS = Delimited("\t", ("user", "item", "rating"), id_type="token")
SYNTHETIC = Delimited("\t", ("user", "item", "rating"), header=("user", "item", "rating"))  # semtail.datasets.synthetic


def read_delimited(path: Path, spec: Delimited, anomalies: Anomalies | None = None) -> pd.DataFrame:
    path = Path(path)
    anomalies = anomalies if anomalies is not None else Anomalies()
    if not path.is_file():
        raise RawFormatError(f"{path}: file not found")
    check_not_empty(path)
    skip = 0
    if spec.header is not None:
        first = _first_line(path)
        if _split_line(first, spec) != list(spec.header):
            raise RawFormatError(
                f"{path}, line 1: expected the header {spec.delimiter.join(spec.header)!r}, found {first[:200]!r}"
            )
        skip = 1
    if spec.final_newline:
        _check_final_newline(path)
    id_type = pa.dictionary(pa.int32(), pa.string()) if spec.id_type == "token" else pa.int64()
    used = [name for name in ("user", "item", "rating") if name in spec.columns]
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=list(spec.columns), skip_rows=skip, block_size=CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=spec.delimiter, quote_char='"' if spec.quoted else False),
            convert_options=pacsv.ConvertOptions(
                column_types={"user": id_type, "item": id_type, "rating": pa.float64()},
                include_columns=used,
                null_values=[""],  # only an empty field is missing; "nan" is a (non-finite) rating
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as error:
        raise _locate_delimited(path, spec, skip, str(error)) from None
    if table.num_rows == 0:
        raise RawFormatError(f"{path}: no interactions in the file")
    if any(table.column(c).null_count for c in used):
        raise _locate_delimited(path, spec, skip, "empty values")
    columns = {"user": _ids(table.column("user")), "item": _ids(table.column("item"))}
    if spec.id_type == "token":
        _refuse_line_breaks_in_ids(path, spec, skip, columns)
    blank = _count_lines(path) - skip - table.num_rows
    if blank:
        anomalies.add("blank_lines", blank, _first_blank_line(path), "skipped")
    if "rating" in used:
        rating = table.column("rating").to_numpy()
        finite = np.isfinite(rating)
        if not finite.all():
            found = _first_bad_line(path, spec, skip, finite_ratings=True)
            first = line_location(path, found[0]) if found else str(path)
            anomalies.add("non_finite_ratings", int((~finite).sum()), first, "dropped")
            columns = {name: values[finite] for name, values in columns.items()}
            rating = rating[finite]
        columns["rating"] = rating.astype(np.float32)
        del rating
    del table
    pa.default_memory_pool().release_unused()
    frame = pd.DataFrame(columns, copy=False)
    if frame.empty:
        raise RawFormatError(f"{path}: no interactions with a finite rating in the file")
    log.info("read %d interactions from %s", len(frame), path)
    return frame


def _first_line(path: Path) -> str:
    with open(path, "rb") as handle:
        return handle.readline().decode("utf-8", "replace").rstrip("\r\n").lstrip("\ufeff")


def _split_line(line: str, spec: Delimited) -> list[str]:
    if not spec.quoted:
        return line.split(spec.delimiter)
    return next(csv.reader([line], delimiter=spec.delimiter, quotechar='"'), [])


def _count_lines(path: Path) -> int:
    """Lines of a file, its last one counted whether or not it ends with a newline."""
    with open(path, "rb") as handle:
        newlines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(CSV_BLOCK_BYTES), b""))
    return newlines + (not _ends_with_newline(path))


def check_not_empty(path: Path) -> None:
    """Refuses a file of no bytes, or of blank lines only, by saying so."""
    with open(path, "rb") as handle:
        if not any(chunk.strip() for chunk in iter(lambda: handle.read(CSV_BLOCK_BYTES), b"")):
            raise RawFormatError(f"{path}: the file is empty" + (" (blank lines only)" if handle.tell() else ""))


# What str.splitlines (and so every reader of the id lists) takes as the end of a line.
LINE_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _refuse_line_breaks_in_ids(path: Path, spec: Delimited, skip: int, columns: Mapping) -> None:
    """Text ids holding a line break: the id lists that the split writes, one id a line, could not
    hold them. Names the line where the first such id starts."""
    broken = [
        role
        for role, ids in columns.items()
        if any(LINE_BREAK.search(value) for value in pd.Categorical(ids).categories)
    ]
    if not broken:
        return
    positions = {role: spec.columns.index(role) for role in broken}
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=spec.delimiter, quotechar='"' if spec.quoted else None)
        start = 1
        for fields in reader:
            if reader.line_num > skip:
                for role, index in positions.items():
                    if index < len(fields) and LINE_BREAK.search(fields[index]):
                        raise RawFormatError(
                            f"{line_location(path, start)}: the {role} id {fields[index][:100]!r} holds a line break; "
                            "the split writes ids one a line, so an id may not hold one: remove it from the id"
                        )
            start = reader.line_num + 1
    raise RawFormatError(f"{path}: a {' and '.join(broken)} id holds a line break; an id may not hold one")


def line_location(origin: Path | str, number: int) -> str:
    """A line of a file, as errors and stats.json's data_warnings (`first`) name it."""
    return f"{origin}, line {number}"


def _first_blank_line(path: Path) -> str:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.rstrip(b"\r\n"):
                return line_location(path, number)
    return str(path)


def _check_final_newline(path: Path) -> None:
    """Refuses a file that does not end with a newline, naming its last line."""
    with open(path, "rb") as handle:
        size = handle.seek(0, io.SEEK_END)
        if size == 0:
            return
        handle.seek(max(0, size - TAIL_BYTES))
        tail = handle.read()
        if tail.endswith(b"\n"):
            return
        handle.seek(0)
        lines = 1 + sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(CSV_BLOCK_BYTES), b""))
    last = tail[tail.rfind(b"\n") + 1 :]
    raise RawFormatError(
        f"{path}, line {lines}: the file does not end with a newline, so it looks truncated (last line "
        f"{last[:200]!r}); the genuine file ends with one: fetch it again (or, if it is complete, add the newline)"
    )


def _ids(column: pa.ChunkedArray) -> np.ndarray | pd.Categorical:
    """Integer ids as the smallest of int32/int64 that holds them; string ids as a Categorical."""
    if pa.types.is_dictionary(column.type):
        return column.to_pandas().array
    values = column.to_numpy()
    if len(values) and np.iinfo(np.int32).min <= values.min() and values.max() <= np.iinfo(np.int32).max:
        return values.astype(np.int32)
    return values


def _locate_delimited(path: Path, spec: Delimited, skip: int, message: str) -> RawFormatError:
    """The first line of a file that fails to parse, as an error naming the file and the line."""
    found = _first_bad_line(path, spec, skip)
    if found is None:
        return RawFormatError(f"{path}: cannot be parsed ({message})")
    number, problem = found
    if not _ends_with_newline(path) and number == _count_lines(path):
        problem += "; it is the last line, and the file does not end with a newline, so it looks truncated"
    return RawFormatError(f"{line_location(path, number)}: {problem}")


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        size = handle.seek(0, io.SEEK_END)
        if size == 0:
            return True
        handle.seek(size - 1)
        return handle.read(1) == b"\n"


def _first_bad_line(path: Path, spec: Delimited, skip: int, finite_ratings: bool = False) -> tuple[int, str] | None:
    """The number of the first line of a file that fails to parse, and what is wrong with it. With
    `finite_ratings`, the first line whose rating is not a finite number."""
    columns = list(spec.columns)
    ids = _token if spec.id_type == "token" else int
    checks: dict[int, Callable[[bytes], object]] = {columns.index("user"): ids, columns.index("item"): ids}
    if "rating" in columns:
        checks[columns.index("rating")] = _finite_float
    delimiter = spec.delimiter.encode()
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\r\n")
            if number <= skip or not line:
                continue
            if spec.quoted:
                fields = [f.encode() for f in _split_line(line.decode("utf-8", "replace"), spec)]
            else:
                fields = line.split(delimiter)
            if len(fields) != len(columns):
                return number, (
                    f"expected {len(columns)} fields separated by {spec.delimiter!r}, "
                    f"found {len(fields)}: {line[:200]!r} (truncated or malformed file?)"
                )
            for index, check in checks.items():
                try:
                    check(fields[index])
                except ValueError:
                    if finite_ratings and columns[index] != "rating":
                        continue
                    return number, f"bad {columns[index]} value {fields[index][:100]!r} in {line[:200]!r}"
    return None


def _finite_float(value: bytes) -> float:
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(value)
    return number


def _token(value: bytes) -> bytes:
    if not value.strip():
        raise ValueError(value)
    value.decode("utf-8")  # a UnicodeDecodeError is a ValueError
    return value


# ---------------------------------------------------------------------------------------- Netflix


@dataclass
class MovieBlocks:
    """Parsed 'MovieID:' blocks: the movies in order, their row counts, and the rows' users and ratings."""

    movies: np.ndarray
    counts: np.ndarray
    users: np.ndarray
    ratings: np.ndarray


HEADER = re.compile(rb"\s*(\d+):\s*")
RATING_LINE = re.compile(rb"\d+,-?\d+,\d{4}-\d\d-\d\d")
BLANK_LINE = re.compile(rb"(?:^|(?<=\n))\r?\n")


def check_last_line(data: bytes, origin: str) -> None:
    """Netflix text that does not end with a newline must end with a complete rating line; any other
    last line (`55508,5,2005-05-1`, `55508,5`, `123:`) looks cut."""
    if data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    last = data[start:].strip()
    if last and not RATING_LINE.fullmatch(last):
        number = data.count(b"\n", 0, start) + 1
        raise RawFormatError(
            f"{origin}, line {number}: the file does not end with a newline and its last "
            f"line {last[:200]!r} is not a complete 'CustomerID,Rating,YYYY-MM-DD' line, so it looks truncated"
        )


def parse_movie_blocks(data: bytes, origin: str, anomalies: Anomalies | None = None) -> MovieBlocks:
    """Parses text of 'MovieID:' lines each followed by 'CustomerID,Rating,Date' lines, the layout of
    both combined_data_*.txt and training_set/mv_*.txt. `origin` names the text in errors. Blank
    lines are skipped and counted in `anomalies`."""
    check_last_line(data, origin)
    blank_starts = []
    if data.startswith((b"\n", b"\r\n")) or b"\n\n" in data or b"\n\r\n" in data:
        blank_starts = [match.start() for match in BLANK_LINE.finditer(data)]
        if anomalies is not None and blank_starts:
            first = line_location(origin, _line_number(data, blank_starts[0]))
            anomalies.add("blank_lines", len(blank_starts), first, "skipped")
    if not data.endswith(b"\n") or data[-2:-1].isspace():  # no final newline, or blank lines at the end
        data = data.rstrip() + b"\n"
    colons = []
    colon = data.find(b":")
    while colon != -1:
        colons.append(colon)
        colon = data.find(b":", colon + 1)
    if not colons:
        raise RawFormatError(f"{origin}: no 'MovieID:' line found")
    movies, bodies = [], []
    for colon in colons:
        start = data.rfind(b"\n", 0, colon) + 1
        end = data.find(b"\n", colon)
        match = HEADER.fullmatch(data, start, end)
        if match is None:
            raise _line_error(data, start, origin, "expected 'MovieID:' or 'CustomerID,Rating,Date'")
        if bodies:
            bodies[-1][1] = start
        elif data[:start].strip():
            raise _line_error(data, 0, origin, "expected a 'MovieID:' line first")
        movies.append(int(match.group(1)))
        bodies.append([end + 1, len(data)])
    view = memoryview(data)
    counts = np.array([data.count(b"\n", s, e) for s, e in bodies], dtype=np.int64)
    if blank_starts:  # pyarrow skips blank lines: they are no rows of their block
        starts = np.asarray(blank_starts)
        counts -= np.array([np.count_nonzero((starts >= s) & (starts < e)) for s, e in bodies], dtype=np.int64)
    if counts.sum() == 0:
        return MovieBlocks(np.array(movies, dtype=np.int64), counts, np.empty(0, np.int32), np.empty(0, np.int8))
    body = b"".join(view[s:e] for s, e in bodies)
    try:
        table = pacsv.read_csv(
            pa.BufferReader(body),
            read_options=pacsv.ReadOptions(column_names=["user", "rating", "date"], block_size=CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={"user": pa.int32(), "rating": pa.int8()}, include_columns=["user", "rating"]
            ),
        )
    except pa.ArrowInvalid as error:
        raise _locate_movie_blocks(data, origin, str(error)) from None
    if table.num_rows != counts.sum() or table.column("user").null_count or table.column("rating").null_count:
        raise _locate_movie_blocks(data, origin, "blank lines or empty values")
    users, ratings = table.column("user").to_numpy(), table.column("rating").to_numpy()
    return MovieBlocks(np.array(movies, dtype=np.int64), counts, users, ratings)


def _line_number(data: bytes, position: int) -> int:
    return data.count(b"\n", 0, position) + 1


def _line_error(data: bytes, position: int, origin: str, problem: str) -> RawFormatError:
    end = data.find(b"\n", position)
    return RawFormatError(
        f"{origin}, line {_line_number(data, position)}: {problem}, found {data[position:end][:200]!r}"
    )


def _locate_movie_blocks(data: bytes, origin: str, message: str) -> RawFormatError:
    for number, raw in enumerate(io.BytesIO(data), start=1):
        line = raw.rstrip(b"\r\n")
        if HEADER.fullmatch(line) or not line:
            continue
        fields = line.split(b",")
        try:
            if len(fields) != 3 or not -128 <= int(fields[1]) <= 127:
                raise ValueError
            int(fields[0])
        except ValueError:
            return RawFormatError(
                f"{origin}, line {number}: expected 'CustomerID,Rating,Date' with an integer rating, "
                f"found {line[:200]!r} (truncated or malformed file?)"
            )
    return RawFormatError(f"{origin}: cannot be parsed ({message})")


def assemble_movie_blocks(parts: list[tuple[MovieBlocks, str]]) -> pd.DataFrame:
    """One frame from blocks read anywhere, ordered by movie id (stable within a movie)."""
    seen: dict[int, str] = {}
    for blocks, origin in parts:
        for movie in blocks.movies.tolist():
            if movie in seen:
                raise RawFormatError(f"{origin}: movie {movie} appears again (also in {seen[movie]})")
            seen[movie] = origin
    movies = np.concatenate([b.movies for b, _ in parts])
    counts = np.concatenate([b.counts for b, _ in parts])
    item = np.repeat(movies.astype(np.int32), counts)
    user = np.concatenate([b.users for b, _ in parts])
    rating = np.concatenate([b.ratings for b, _ in parts]).astype(np.float32)
    if np.any(np.diff(movies) < 0):
        order = np.argsort(item, kind="stable")
        item, user, rating = item[order], user[order], rating[order]
    if len(item) == 0:
        raise RawFormatError(f"{parts[0][1]}: no ratings found")
    return pd.DataFrame({"user": user, "item": item, "rating": rating}, copy=False)


def check_netflix_combined_files(files: Sequence[Path], where: str = "netflix-combined") -> None:
    """netflix-combined reads all four combined_data files, or one zip holding them (whose content
    the reader checks). `where` names the source in the error."""
    if len(files) == 1 and zipfile.is_zipfile(files[0]):
        return
    present = sorted(Path(f).name for f in files if Path(f).is_file())
    if present != list(NETFLIX_COMBINED_FILES):
        missing = [name for name in NETFLIX_COMBINED_FILES if name not in present]
        others = [str(f) for f in files if Path(f).name not in NETFLIX_COMBINED_FILES or not Path(f).is_file()]
        raise RawFormatError(
            f"{where}: netflix-combined reads all four files {', '.join(NETFLIX_COMBINED_FILES)}, given as the "
            f"folder or a zip holding them (the source's path, with no member:); missing {missing}"
            + (f", given instead {others}" if others else "")
        )


def read_netflix_combined(files: Sequence[Path], anomalies: Anomalies | None = None) -> pd.DataFrame:
    """combined_data_1.txt ... combined_data_4.txt, given as the files or as a zip holding them."""
    check_netflix_combined_files(files)
    parts = []
    if len(files) == 1 and zipfile.is_zipfile(files[0]):
        with zipfile.ZipFile(files[0]) as bundle:
            names = {PurePosixPath(n).name: n for n in bundle.namelist()}
            missing = [n for n in NETFLIX_COMBINED_FILES if n not in names]
            if missing:
                raise RawFormatError(f"{files[0]}: the zip archive lacks {missing}")
            for name in NETFLIX_COMBINED_FILES:
                origin = f"{files[0]}:{names[name]}"
                data = _read_zip_member(bundle, names[name], origin)
                parts.append((parse_movie_blocks(data, origin, anomalies), origin))
    else:
        for path in files:
            parts.append((parse_movie_blocks(Path(path).read_bytes(), str(path), anomalies), str(path)))
    frame = assemble_movie_blocks(parts)
    log.info("read %d ratings of %d movies from %s", len(frame), sum(len(b.movies) for b, _ in parts), list(files))
    return frame


def _read_zip_member(bundle: zipfile.ZipFile, name: str, origin: str) -> bytes:
    try:
        return bundle.read(name)
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as error:
        raise RawFormatError(f"{origin}: cannot be read, the archive is damaged or truncated ({error})") from None


def read_netflix_tar(files: Sequence[Path], anomalies: Anomalies | None = None) -> pd.DataFrame:
    """The Netflix Prize archive (nf_prize_dataset.tar.gz, holding download/training_set.tar) or
    training_set.tar itself, streamed: the 17,770 mv_*.txt files are never written to disk."""
    if len(files) != 1:
        raise RawFormatError(f"netflix-tar reads one archive, got {list(files)}")
    path = Path(files[0])
    parts: list[tuple[MovieBlocks, str]] = []
    pending: list[bytes] = []
    pending_bytes = 0

    def flush(origin: str) -> None:
        nonlocal pending_bytes
        if pending:
            parts.append((parse_movie_blocks(b"".join(pending), origin, anomalies), origin))
            pending.clear()
            pending_bytes = 0

    def walk(archive: tarfile.TarFile, origin: str) -> None:
        nonlocal pending_bytes
        for member in archive:
            where = f"{origin}:{member.name}"
            if member.issym() or member.islnk():
                raise RawFormatError(f"{where}: the archive holds a link; refusing it")
            if not member.isfile():
                continue
            name = PurePosixPath(member.name).name
            if name.endswith(".tar"):
                with tarfile.open(fileobj=archive.extractfile(member), mode="r|") as inner:
                    walk(inner, where)
                continue
            number = NETFLIX_MOVIE_FILE.fullmatch(name)
            if number is None:
                continue
            text = archive.extractfile(member).read()
            header = HEADER.match(text)
            if header is None or int(header.group(1)) != int(number.group(1)):
                raise RawFormatError(f"{where}, line 1: expected '{int(number.group(1))}:', found {text[:40]!r}")
            if not text.endswith(b"\n"):
                check_last_line(text, where)
                text += b"\n"
            pending.append(text)
            pending_bytes += len(text)
            if pending_bytes >= NETFLIX_CHUNK_BYTES:
                flush(f"{where} and the mv_*.txt files before it")

    if not path.is_file():
        raise RawFormatError(f"{path}: file not found")
    try:
        with tarfile.open(path, mode="r|*") as archive:
            walk(archive, str(path))
    except (tarfile.TarError, EOFError, zlib.error, OSError, zipfile.BadZipFile) as error:
        raise RawFormatError(f"{path}: cannot be read, the archive is damaged or truncated ({error})") from None
    flush(f"{path}: the last mv_*.txt files")
    if not parts:
        raise RawFormatError(f"{path}: no training_set/mv_*.txt files found in the archive")
    frame = assemble_movie_blocks(parts)
    log.info("read %d ratings of %d movies from %s", len(frame), sum(len(b.movies) for b, _ in parts), path)
    return frame


# ---------------------------------------------------------------------------------------- your own data

DELIMITED_ROLES = ("user", "item", "rating", "timestamp")
DELIMITED_KEYS = ("sep", "header", "columns")
FORBIDDEN_SEPARATORS = ('"', "\n", "\r")


@dataclass(frozen=True)
class DelimitedOptions:
    """The `delimited` format of a source entry: `sep` (one character), `header` (whether the first
    line names the columns; default true) and `columns`, which maps user and item (required), rating
    and timestamp (optional) to a header name or a 0-based position. Ids are read as text. Without a
    rating every row is a positive. The timestamp is checked to exist, not read: the split ignores time."""

    sep: str
    header: bool
    columns: tuple[tuple[str, str | int], ...]  # (role, name or position), in DELIMITED_ROLES order

    @classmethod
    def from_source(cls, entry: Mapping, where: str) -> DelimitedOptions:
        sep = entry.get("sep")
        if not isinstance(sep, str) or len(sep) != 1 or sep in FORBIDDEN_SEPARATORS:
            raise RawFormatError(
                f'{where}.sep: the delimited format needs one separator character (write "\\t" in double '
                f"quotes for a tab; not a quote or a line break), got {sep!r}"
            )
        header = entry.get("header", True)
        if not isinstance(header, bool):
            raise RawFormatError(f"{where}.header: must be true or false, got {header!r}")
        columns = entry.get("columns")
        if not isinstance(columns, Mapping):
            raise RawFormatError(
                f"{where}.columns: the delimited format needs columns, e.g. {{user: customer, item: product}} "
                f"(header names) or {{user: 0, item: 1}} (0-based positions), got {columns!r}"
            )
        unknown = sorted(set(columns) - set(DELIMITED_ROLES))
        missing = [role for role in ("user", "item") if role not in columns]
        if unknown or missing:
            raise RawFormatError(
                f"{where}.columns: needs user and item, may have rating and timestamp; "
                + ", ".join(
                    filter(None, [f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else ""])
                )
            )
        for role, value in columns.items():
            if isinstance(value, bool) or not isinstance(value, (str, int)) or value in ("", None):
                raise RawFormatError(f"{where}.columns.{role}: a header name or a 0-based position, got {value!r}")
            if isinstance(value, int) and value < 0:
                raise RawFormatError(f"{where}.columns.{role}: a position counts from 0, got {value}")
            if isinstance(value, str) and not header:
                raise RawFormatError(
                    f"{where}.columns.{role}: {value!r} is a column name, but header is false: give 0-based positions"
                )
        values = list(columns.values())
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise RawFormatError(f"{where}.columns: {repeated} given for more than one of {sorted(columns)}")
        return cls(sep, header, tuple((role, columns[role]) for role in DELIMITED_ROLES if role in columns))

    @property
    def has_rating(self) -> bool:
        return any(role == "rating" for role, _ in self.columns)

    def spec(self, path: Path) -> Delimited:
        """The file's layout: its header (if any) and each field's role, from the header line or,
        without one, the first line's number of fields."""
        path = Path(path)
        if not path.is_file():
            raise RawFormatError(f"{path}: file not found")
        check_not_empty(path)
        probe = Delimited(self.sep, (), quoted=True)
        if self.header:
            line, number = _first_line(path), 1
        else:
            line, number = next(((text, n) for n, text in enumerate(_lines(path), start=1) if text.strip()), ("", 1))
        fields = _split_line(line, probe)
        names = fields if self.header else None
        roles = [f"_column{index}" for index in range(len(fields))]
        for role, value in self.columns:
            if isinstance(value, str):
                if value not in fields:
                    raise RawFormatError(
                        f"{path}, line 1: the header has no column {value!r} (columns.{role}); it has {fields[:20]} "
                        f"separated by {self.sep!r}"
                    )
                roles[fields.index(value)] = role
            elif value >= len(fields):
                raise RawFormatError(
                    f"{path}, line {number}: columns.{role} is position {value}, but the line has {len(fields)} "
                    f"fields separated by {self.sep!r}: {line[:200]!r}"
                )
            else:
                roles[value] = role
        header = tuple(names) if names is not None else None
        return Delimited(self.sep, tuple(roles), header, "token", quoted=True, final_newline=False)


def _lines(path: Path):
    with open(path, "rb") as handle:
        for raw in handle:
            yield raw.decode("utf-8", "replace").rstrip("\r\n").lstrip("\ufeff")


def read_delimited_source(files: Sequence[Path], source: Mapping, anomalies: Anomalies | None = None) -> pd.DataFrame:
    """A file in the `delimited` format, laid out as the source entry's sep, header and columns say
    (the preprocess stage makes sure that provenance.json recorded the entry)."""
    path = _single(files, "delimited")
    return read_delimited(path, DelimitedOptions.from_source(source, "source").spec(path), anomalies)


# ---------------------------------------------------------------------------------------- dispatch

Reader = Callable[[Sequence[Path], "Mapping | None", "Anomalies | None"], pd.DataFrame]
READERS: dict[str, Reader] = {
    "ml-100k": lambda files, source, anomalies: read_delimited(_single(files, "ml-100k"), ML_100K, anomalies),
    "recbole-inter": lambda files, source, anomalies: read_delimited(
        _single(files, "recbole-inter"), RECBOLE_INTER, anomalies
    ),
    "ml-20m": lambda files, source, anomalies: read_delimited(_single(files, "ml-20m"), ML_20M, anomalies),
    "msd-triplets": lambda files, source, anomalies: read_delimited(
        _single(files, "msd-triplets"), MSD_TRIPLETS, anomalies
    ),
    "netflix-tar": lambda files, source, anomalies: read_netflix_tar(files, anomalies),
    "netflix-combined": lambda files, source, anomalies: read_netflix_combined(files, anomalies),
    "delimited": read_delimited_source,
    "synthetic": lambda files, source, anomalies: read_delimited(_single(files, "synthetic"), SYNTHETIC, anomalies),
}
FORMATS = tuple(READERS)
SINGLE_FILE_FORMATS = ("ml-100k", "recbole-inter", "ml-20m", "msd-triplets", "delimited", "synthetic")


def _single(files: Sequence[Path], format: str) -> Path:
    if len(files) != 1:
        raise RawFormatError(f"format {format} reads one file, got {[str(f) for f in files]}")
    return Path(files[0])


def read_interactions(
    format: str, files: Sequence[str | Path], source: Mapping | None = None, anomalies: Anomalies | None = None
) -> pd.DataFrame:
    """The raw interactions in `files`, parsed as `format` (one of FORMATS). `source`: the source
    entry of the config, which the delimited format reads its layout from. What was skipped or
    dropped is counted in `anomalies`."""
    if format not in READERS:
        raise RawFormatError(f"unknown raw format {format!r} (known: {', '.join(FORMATS)})")
    return READERS[format]([Path(f) for f in files], source, anomalies)
