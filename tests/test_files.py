"""Results are written whole or not at all."""

import errno
import hashlib
import json
import os
import stat

import pytest

from semtail.files import CHUNK_BYTES, Checksums, atomic_path, read_chunks, read_json, sha256, write_json


def test_a_failed_write_leaves_neither_the_target_nor_a_temporary(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"half": ')
        raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_an_existing_result_survives_a_failed_rewrite(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"ndcg@100": 0.4})
    with pytest.raises(ValueError):
        write_json(target, {"ndcg@100": float("nan")})  # NaN is not valid JSON: refused, not written
    assert json.loads(target.read_text()) == {"ndcg@100": 0.4}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_the_temporary_keeps_the_suffix_and_the_result_gets_umask_permissions(tmp_path):
    target = tmp_path / "topk.npz"
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".npz" and tmp.parent == tmp_path
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_json(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "code, said", [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded")]
)
def test_a_full_disk_is_named_with_the_path_and_leaves_the_old_result(tmp_path, code, said):
    target = tmp_path / "metrics.json"
    write_json(target, {"ndcg@100": 0.4})
    with pytest.raises(OSError) as caught, atomic_path(target) as tmp:
        tmp.write_text('{"half": ')
        raise OSError(code, os.strerror(code))
    assert str(caught.value) == f"{said} writing {target}"
    assert json.loads(target.read_text()) == {"ndcg@100": 0.4}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_checksums_over_chunks_are_those_of_the_whole_file(tmp_path):
    data = os.urandom(2 * CHUNK_BYTES + 12345)  # two whole chunks and a part
    path = tmp_path / "raw.bin"
    path.write_bytes(data)
    assert sha256(path) == hashlib.sha256(data).hexdigest()
    checksums, pieces = Checksums("md5", "sha256"), []
    with open(path, "rb") as handle:
        read_chunks(handle, checksums.update, pieces.append)
    assert [len(piece) for piece in pieces] == [CHUNK_BYTES, CHUNK_BYTES, 12345]
    assert checksums.bytes == len(data)
    assert checksums.hexdigest("md5") == hashlib.md5(data).hexdigest()
    assert checksums.hexdigest() == hashlib.sha256(data).hexdigest()
