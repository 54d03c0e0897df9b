"""Writing results so that nothing half-written ever looks finished."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it to `path` only if the block succeeds.

    The temporary name keeps the suffix, so libraries that pick a format by extension still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = None
    # A signal handled from here on removes the temporary file; one handled inside mkstemp, after
    # the file is made and before its name is returned, leaves it (TrainingRun.remove_partial_files).
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".partial{target.suffix}")
        tmp_path = Path(tmp)
        os.close(fd)
        tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes owner-only files; results are meant to be shared
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException as error:
        out_of_space = _out_of_space(error, target.parent)
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        if out_of_space:
            raise OutOfSpace(f"{out_of_space} writing {target}") from error
        raise


def partial_files(folder: str | os.PathLike, stem: str) -> list[Path]:
    """The temporary files of atomic_path in `folder` for a target named `stem` plus a suffix,
    `.{stem}.XXXXXXXX.partial{suffix}`: left behind only by a process killed outright (SIGKILL, a
    machine that went away), since an exception or a handled signal removes them."""
    pattern = re.compile(rf"\.{re.escape(stem)}\.[a-z0-9_]{{8}}\.partial(\..*)?")
    found = Path(folder).glob(f".{glob.escape(stem)}.*.partial*")
    return sorted(path for path in found if path.is_file() and pattern.fullmatch(path.name))


CHUNK_BYTES = 1 << 20


class Checksums:
    """Running checksums of a stream of bytes, fed a chunk at a time (`update`): the `hashlib`
    algorithms named (sha256 unless told), and the number of bytes."""

    def __init__(self, *algorithms: str):
        self.hashes = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms or ("sha256",)}
        self.bytes = 0

    def update(self, chunk: bytes) -> None:
        for digest in self.hashes.values():
            digest.update(chunk)
        self.bytes += len(chunk)

    def hexdigest(self, algorithm: str = "sha256") -> str:
        return self.hashes[algorithm].hexdigest()


def read_chunks(stream: BinaryIO, *consumers: Callable[[bytes], object]) -> None:
    """Reads a binary stream to its end, CHUNK_BYTES at a time, handing each chunk to each consumer."""
    while chunk := stream.read(CHUNK_BYTES):
        for consume in consumers:
            consume(chunk)


def sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes: the checksum of every file the workflow records or checks."""
    checksums = Checksums("sha256")
    with open(path, "rb") as handle:
        read_chunks(handle, checksums.update)
    return checksums.hexdigest()


class OutOfSpace(OSError):
    """A result that could not be written whole for want of disk space; its path is named."""


# torch.save's writer fails on a full disk with only "[enforce fail at inline_container.cc:...]
# unexpected pos ...", no errno: a file system this nearly full is taken to be the cause.
NEARLY_FULL_BYTES = 16 * 2**20


def _out_of_space(error: BaseException, folder: Path) -> str | None:
    """What a failed write ran out of, or None when it was something else."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return "no space left on device"
    if isinstance(error, OSError) and error.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if (
        isinstance(error, RuntimeError)
        and "inline_container" in str(error)
        and shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    ):
        return "no space left on device"
    return None


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: str | os.PathLike, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
