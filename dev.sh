#!/usr/bin/env bash
# One entry point for a fresh clone: sets up .venv (if needed), then runs a job.
#   bash dev.sh demo [ARGS...]   install workcrew and run `workcrew demo`
#   bash dev.sh test [ARGS...]   install with test tools; ruff, mypy --strict, pytest
#   bash dev.sh bench [ARGS...]  install with benchmark peers; run benchmarks/run.py
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
venv=.venv

setup() {  # $1: the extras to install, e.g. "test"
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
    fi
    local stamp="$venv/.installed-$1"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$1]"
        touch "$stamp"
    fi
}

job=${1:-}
shift || true
case "$job" in
    demo)
        setup test
        exec "$venv/bin/workcrew" demo "$@"
        ;;
    test)
        setup test
        "$venv/bin/ruff" check src tests benchmarks
        "$venv/bin/ruff" format --check src tests benchmarks
        "$venv/bin/mypy"
        exec "$venv/bin/python" -m pytest "$@"
        ;;
    bench)
        setup bench
        exec "$venv/bin/python" benchmarks/run.py "$@"
        ;;
    *)
        echo "usage: bash dev.sh demo|test|bench [ARGS...]" >&2
        exit 2
        ;;
esac
