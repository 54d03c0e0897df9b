"""The suite's own arrangement: under `./workflow.sh test` (pytest-xdist, --dist loadgroup) the
tests of one xdist_group run on one worker, so that the run they share is made once."""

from __future__ import annotations

import pytest

from workflow_runs import SYNTHETIC_RUN_GROUP


@SYNTHETIC_RUN_GROUP
def test_a_groups_tests_are_sent_to_one_worker(request):
    if not request.config.getoption("loadgroup", default=False):
        pytest.skip("not run by pytest-xdist with --dist loadgroup")
    # the scheduler keeps together the tests whose node ids end in the same @group
    assert request.node.nodeid.endswith("@synthetic-run"), request.node.nodeid
