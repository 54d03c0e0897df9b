"""How a workflow script ends: exit_without_teardown leaves out Python's teardown of the imported
modules, and nothing that the script wrote, logged or printed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from workflow_runs import REPO

SCRIPT = """\
import atexit, sys
from semtail.script_io import exit_without_teardown, script_run, setup_logging

run = script_run(globals(), "a test script")
log = setup_logging(run, "test")
atexit.register(lambda: open({teardown!r}, "w").write("torn down"))
out = open({output!r}, "w")
out.write("written, not flushed")
out.close()
sys.stdout.write("printed without a newline")
log.info("the last line of the log")
{ending}
"""


def run_script(tmp_path, ending: str) -> tuple[subprocess.CompletedProcess, dict]:
    paths = {name: tmp_path / name for name in ("teardown", "output", "job.log")}
    source = SCRIPT.format(teardown=str(paths["teardown"]), output=str(paths["output"]), ending=ending)
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    done = subprocess.run(
        [sys.executable, str(script), "--log", str(paths["job.log"])],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO / "workflow_scripts"), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, paths


def test_a_script_ended_without_teardown_keeps_its_log_output_and_status(tmp_path):
    done, paths = run_script(tmp_path, "exit_without_teardown()\nraise AssertionError('not reached')")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "printed without a newline"
    assert paths["job.log"].read_text().rstrip().endswith("INFO test: the last line of the log")
    assert paths["output"].read_text() == "written, not flushed"
    assert not paths["teardown"].exists()  # the exit handlers, the teardown's first step, did not run


def test_a_failing_script_ends_the_usual_way_with_its_error_logged(tmp_path):
    done, paths = run_script(tmp_path, "raise ValueError('bad input')\nexit_without_teardown()")
    assert done.returncode == 1
    assert done.stdout == "printed without a newline"
    log = paths["job.log"].read_text()
    assert "the last line of the log" in log and "CRITICAL test: ValueError: bad input" in log
    assert paths["teardown"].read_text() == "torn down"
