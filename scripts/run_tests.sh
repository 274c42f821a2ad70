#!/usr/bin/env bash
# `make test`: ruff, the whole suite, then the reliability figures (scripts/reliability.py).
#
# The two slow checks that do not depend on the suite, mypy on include/ and the hostile-memory
# figures (scripts/hostile_memory.py), start beside it at the lowest CPU priority (nice 19): they
# take the CPU the suite leaves idle while it waits on its servers and schedulers, and finish at
# full speed after it, instead of adding their minutes before and after it. ruff still runs first:
# a finding fails in seconds. TEST_WORKERS pytest-xdist processes share the suite (default: cores + 1).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
figures="${PATIENT_IMPORT_HOME:-var}/reliability"
workers="${TEST_WORKERS:-$(( $(nproc 2>/dev/null || echo 2) + 1 ))}"

.venv/bin/ruff check || exit 1

mkdir -p "$figures"
# The corpus is imported once: by the tests, which leave its figures for reliability.py.
rm -f "$figures/corpus.json" "$figures"/hostile_memory.*
mypy_output=$(mktemp)
# Each in a session of its own (setsid keeps the pid), so that the trap can stop it and what it forked.
setsid nice -n 19 "$PY" scripts/hostile_memory.py --record "$figures" </dev/null >/dev/null 2>&1 &
memory=$!
# Its pid recorded here too, before the suite: a quick suite (PYTEST_ADDOPTS) must not find no run.
echo "$memory" >"$figures/hostile_memory.pid"
setsid nice -n 19 .venv/bin/mypy include </dev/null >"$mypy_output" 2>&1 &
mypy=$!
# The suite and reliability.py too run in a process group of their own, waited for: bash runs no
# trap while a foreground child runs, and a SIGTERM (make's, when make itself is terminated) would
# kill the script and leave the suite running. Ctrl-C is passed on to the step, which cleans up as
# usual: job control (set -m) while it starts, else bash starts it with SIGINT ignored.
step=""
# Each by its group and by its pid: a child that has not yet called setsid is in no group of its own.
trap 'kill -- "-$memory" "$memory" "-$mypy" "$mypy" ${step:+"-$step"} 2>/dev/null; rm -f "$mypy_output"' EXIT
trap '[[ -n $step ]] && kill -INT -- "-$step" 2>/dev/null && wait "$step"; exit 130' INT
trap 'exit 143' TERM HUP
in_session() {
    set -m
    "$@" <&0 &
    step=$!
    set +m
    wait "$step"
}

# pytest keeps a test module's rewritten assertions as bytecode only where Python may write it: with
# PYTHONDONTWRITEBYTECODE set (CI images) every worker rewrote and compiled every test module again
# on every run (collection ~13 s of CPU per worker instead of ~6 once they are kept).
unset PYTHONDONTWRITEBYTECODE
xdist=()
[[ "$workers" =~ ^[0-9]+$ && "$workers" -gt 1 ]] && xdist=(-n "$workers" --dist loadscope)
in_session "$PY" -m pytest -q --durations=25 "${xdist[@]}"
tests=$?

wait "$mypy"
typed=$?
cat "$mypy_output"
[[ $tests -eq 0 ]] || exit "$tests"
[[ $typed -eq 0 ]] || exit "$typed"

in_session "$PY" scripts/reliability.py --corpus-recorded --memory-recorded
