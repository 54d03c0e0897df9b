"""Shared fixtures: tiny synthetic datasets written in every raw format (helpers in
synthetic_data.py) and a local HTTP server. No real dataset content is used anywhere."""

from __future__ import annotations

import os

# OpenMP threads that wait by sleeping, not spinning (as train.py sets for its jobs): the two
# pytest-xdist workers share two cores, and torch's spinning threads took as much CPU again as the
# quick tests themselves. Set before anything imports torch, which reads it then.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import functools
import http.server
import threading
from pathlib import Path

import pandas as pd
import pytest

from synthetic_data import RAW_WRITERS, save_training_split


def pytest_collection_modifyitems(items):
    """The end-to-end runs (marked slow) first, the quick tests after them; under pytest-xdist
    (`./workflow.sh test`, with --no-loadscope-reorder to keep this order) each worker takes the
    next test when it is done with one. The SLURM run comes first, as it mostly waits on its
    scheduler, and the other worker meanwhile makes the session's completed demo, which saturates
    the cores. The quick tests at the end fill the time until the last run ends."""

    def order(item) -> int:
        if item.get_closest_marker("slow") is None:
            return 3
        if item.get_closest_marker("slurm"):
            return 0
        return 1 if "completed_demo" in item.fixturenames else 2

    items.sort(key=order)


@pytest.fixture
def raw_files(tmp_path):
    """raw_files(format, frame) writes frame in that raw format under tmp_path; returns the paths."""

    def write(raw_format: str, frame: pd.DataFrame, directory: Path | None = None) -> list[Path]:
        target = directory or tmp_path / raw_format
        target.mkdir(parents=True, exist_ok=True)
        return RAW_WRITERS[raw_format](frame, target)

    return write


@pytest.fixture(scope="module")
def split_files(tmp_path_factory):
    """A folder with a small training split (150 users, 30 items), shared by a module's tests."""
    from semtail.models.synthetic import training_data

    folder = tmp_path_factory.mktemp("split")
    save_training_split(folder, training_data(150, 30, 6, 40, seed=0))
    return folder


# ---------------------------------------------------------------------------------------- HTTP server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder. A name ending in '.cut' announces twice its size and sends half of it,
    as a connection dropped mid-download does."""

    def do_GET(self):
        if self.path.endswith(".cut"):
            data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(2 * len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """(folder, base_url): files put in folder are served at base_url by a server on 127.0.0.1."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------------ end-to-end runs of the workflow

# A completed demo run in a copy of the repository, shared by test_rerun, test_slurm and
# test_workflow_hygiene, and a synthetic run shared by two tests (workflow_runs.py).
from workflow_runs import completed_demo, demo_copy, synthetic_run  # noqa: E402,F401
