#!/usr/bin/env bash
# Sets up a virtual environment in .venv from this repository's own files, then
#   ./workflow.sh run [snakemake args...]   runs the workflow (default: the ML-100K demo, all cores)
#   ./workflow.sh test [pytest args...]     runs the test suite
# Needs Python 3.11+ and the Python package index; nothing else.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed, found " + sys.version.split()[0])'

# The exact versions the tests passed with (envs/requirements.lock.txt; docs/running.md, "Pinned
# environments"); PIN=no installs the newest within pyproject.toml's ranges instead.
PIN=${PIN:-yes}
constraints=()
[ "$PIN" = no ] || constraints=(-c envs/requirements.lock.txt)
stamp="$VENV/.installed-$(cat pyproject.toml envs/requirements.lock.txt | sha256sum | cut -c1-12)-pin-$PIN"
if [ ! -f "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet ${constraints[@]+"${constraints[@]}"} -e ".[workflow,test]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
    run)
        exec snakemake --cores all "$@"
        ;;
    test)
        # Two test processes on two cores (pytest-xdist), each taking the next test in the order
        # tests/conftest.py gives them; the tests of one xdist_group stay on one (--dist loadgroup).
        exec python -m pytest --numprocesses auto --maxprocesses 4 --dist loadgroup --no-loadscope-reorder "$@"
        ;;
    *)
        echo "usage: $0 run [snakemake args...] | test [pytest args...]" >&2
        exit 2
        ;;
esac
