"""Readers of the raw dataset formats. Each returns a DataFrame with columns user, item, rating in
the order of the raw file(s), raw ids kept as they are: integers for MovieLens and Netflix, strings
(as a pandas Categorical) for the Million Song Dataset. `rating` is float32 and never NaN; for MSD it
is the play count.

Row order matters: the split draws held-out items by position within each user's interactions, and
orders the item columns by first appearance. Delimited files keep their line order. Netflix rows are
ordered by movie id, then as listed in that movie's block, for both layouts of the data.

Parsing is vectorised (pyarrow); a malformed file is then scanned line by line to name the line.

A file cut short can still parse: `1,3,5.0,1` may be the start of `1,3,5.0,1427784002`. The genuine
delimited files (GroupLens's ratings.csv and u.data, RecBole's ml-100k.inter, the MSD triplets) all end
with a newline, so one that does not is refused as truncated. Netflix text is not known to always end
with one, so there a last line without a newline must be a complete `CustomerID,Rating,YYYY-MM-DD`.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

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


@dataclass(frozen=True)
class Delimited:
    """A delimited text format: its separator, header line (if any) and columns."""

    delimiter: str
    columns: tuple[str, ...]  # all columns, in file order; user, item and rating among them
    header: tuple[str, ...] | None = None  # the exact header fields, when the file has a header line
    id_type: str = "int"  # "int", or "token" for string ids


ML_100K = Delimited("\t", ("user", "item", "rating", "timestamp"))
RECBOLE_INTER = Delimited(
    "\t",
    ("user", "item", "rating", "timestamp"),
    header=("user_id:token", "item_id:token", "rating:float", "timestamp:float"),
)
ML_20M = Delimited(",", ("user", "item", "rating", "timestamp"), header=("userId", "movieId", "rating", "timestamp"))
MSD_TRIPLETS = Delimited("\t", ("user", "item", "rating"), id_type="token")


def read_delimited(path: Path, spec: Delimited) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise RawFormatError(f"{path}: file not found")
    skip = 0
    if spec.header is not None:
        with open(path, "rb") as handle:
            first = handle.readline().decode("utf-8", "replace").rstrip("\r\n").lstrip("\ufeff")
        if first.split(spec.delimiter) != list(spec.header):
            raise RawFormatError(
                f"{path}, line 1: expected the header {spec.delimiter.join(spec.header)!r}, found {first[:200]!r}"
            )
        skip = 1
    _check_final_newline(path)
    id_type = pa.dictionary(pa.int32(), pa.string()) if spec.id_type == "token" else pa.int64()
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=list(spec.columns), skip_rows=skip, block_size=CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=spec.delimiter, quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={"user": id_type, "item": id_type, "rating": pa.float64()},
                include_columns=["user", "item", "rating"],
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as error:
        raise _locate_delimited(path, spec, skip, str(error)) from None
    if table.num_rows == 0:
        raise RawFormatError(f"{path}: no interactions in the file")
    if any(table.column(c).null_count for c in ("user", "item", "rating")):
        raise _locate_delimited(path, spec, skip, "empty values")
    rating = table.column("rating").to_numpy()
    if not np.isfinite(rating).all():
        raise _locate_delimited(path, spec, skip, "non-finite ratings")
    columns = {"user": _ids(table.column("user")), "item": _ids(table.column("item")), "rating": rating.astype(np.float32)}
    del table, rating
    pa.default_memory_pool().release_unused()
    frame = pd.DataFrame(columns, copy=False)
    log.info("read %d interactions from %s", len(frame), path)
    return frame


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
    columns = list(spec.columns)
    checks: dict[int, Callable[[bytes], object]] = {
        columns.index("rating"): _finite_float,
        columns.index("user"): _token if spec.id_type == "token" else int,
        columns.index("item"): _token if spec.id_type == "token" else int,
    }
    delimiter = spec.delimiter.encode()
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\r\n")
            if number <= skip or not line:
                continue
            fields = line.split(delimiter)
            if len(fields) != len(columns):
                return RawFormatError(
                    f"{path}, line {number}: expected {len(columns)} fields separated by {spec.delimiter!r}, "
                    f"found {len(fields)}: {line[:200]!r} (truncated or malformed file?)"
                )
            for index, check in checks.items():
                try:
                    check(fields[index])
                except ValueError:
                    return RawFormatError(
                        f"{path}, line {number}: bad {columns[index]} value {fields[index][:100]!r} in {line[:200]!r}"
                    )
    return RawFormatError(f"{path}: cannot be parsed ({message})")


def _finite_float(value: bytes) -> float:
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(value)
    return number


def _token(value: bytes) -> bytes:
    if not value.strip():
        raise ValueError(value)
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
RATING_LINE = re.compile(rb"\d+,[1-5],\d{4}-\d\d-\d\d")


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


def parse_movie_blocks(data: bytes, origin: str) -> MovieBlocks:
    """Parses text of 'MovieID:' lines each followed by 'CustomerID,Rating,Date' lines, the layout of
    both combined_data_*.txt and training_set/mv_*.txt. `origin` names the text in errors."""
    check_last_line(data, origin)
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
    if ratings.min() < 1 or ratings.max() > 5:
        raise _locate_movie_blocks(data, origin, "ratings outside 1-5")
    return MovieBlocks(np.array(movies, dtype=np.int64), counts, users, ratings)


def _line_error(data: bytes, position: int, origin: str, problem: str) -> RawFormatError:
    number = data.count(b"\n", 0, position) + 1
    end = data.find(b"\n", position)
    return RawFormatError(f"{origin}, line {number}: {problem}, found {data[position:end][:200]!r}")


def _locate_movie_blocks(data: bytes, origin: str, message: str) -> RawFormatError:
    for number, raw in enumerate(io.BytesIO(data), start=1):
        line = raw.rstrip(b"\r\n")
        if HEADER.fullmatch(line):
            continue
        fields = line.split(b",")
        try:
            if len(fields) != 3 or not 1 <= int(fields[1]) <= 5:
                raise ValueError
            int(fields[0])
        except ValueError:
            return RawFormatError(
                f"{origin}, line {number}: expected 'CustomerID,Rating,Date' with a rating of 1-5, "
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


def read_netflix_combined(files: Sequence[Path]) -> pd.DataFrame:
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
                parts.append((parse_movie_blocks(_read_zip_member(bundle, names[name], origin), origin), origin))
    else:
        for path in files:
            parts.append((parse_movie_blocks(Path(path).read_bytes(), str(path)), str(path)))
    frame = assemble_movie_blocks(parts)
    log.info("read %d ratings of %d movies from %s", len(frame), sum(len(b.movies) for b, _ in parts), list(files))
    return frame


def _read_zip_member(bundle: zipfile.ZipFile, name: str, origin: str) -> bytes:
    try:
        return bundle.read(name)
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as error:
        raise RawFormatError(f"{origin}: cannot be read, the archive is damaged or truncated ({error})") from None


def read_netflix_tar(files: Sequence[Path]) -> pd.DataFrame:
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
            parts.append((parse_movie_blocks(b"".join(pending), origin), origin))
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


# ---------------------------------------------------------------------------------------- dispatch

READERS: dict[str, Callable[[Sequence[Path]], pd.DataFrame]] = {
    "ml-100k": lambda files: read_delimited(_single(files, "ml-100k"), ML_100K),
    "recbole-inter": lambda files: read_delimited(_single(files, "recbole-inter"), RECBOLE_INTER),
    "ml-20m": lambda files: read_delimited(_single(files, "ml-20m"), ML_20M),
    "msd-triplets": lambda files: read_delimited(_single(files, "msd-triplets"), MSD_TRIPLETS),
    "netflix-tar": read_netflix_tar,
    "netflix-combined": read_netflix_combined,
}
FORMATS = tuple(READERS)
SINGLE_FILE_FORMATS = ("ml-100k", "recbole-inter", "ml-20m", "msd-triplets")


def _single(files: Sequence[Path], format: str) -> Path:
    if len(files) != 1:
        raise RawFormatError(f"format {format} reads one file, got {[str(f) for f in files]}")
    return Path(files[0])


def read_interactions(format: str, files: Sequence[str | Path]) -> pd.DataFrame:
    """The raw interactions in `files`, parsed as `format` (one of FORMATS)."""
    if format not in READERS:
        raise RawFormatError(f"unknown raw format {format!r} (known: {', '.join(FORMATS)})")
    return READERS[format]([Path(f) for f in files])
