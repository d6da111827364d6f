#!/bin/sh
# In a guest of scripts/vmtest (scripts/test runs it on each kernel of the
# matrix): installs the .deb scripts/test built, as a user would, then runs
# the privileged and scenario tests against the installed binary. The
# one-minute memory soak stays on the host: it measures the agent, not the
# kernel.
set -eu
deb=$(ls build/rstwatch_*_amd64.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || { echo "run-matrix: no build/rstwatch_*_amd64.deb (scripts/test builds it)" >&2; exit 2; }
# Into the guest's overlay: gone with the VM. No triggers: man-db's would
# index every man page under emulation.
dpkg --no-triggers -i "$deb" >/dev/null
export RSTWATCH_BIN=/usr/bin/rstwatch
# A TCG guest runs several times slower than the host: tests that bound a
# wall-clock time (a stop in a storm) allow this many times more.
export RSTWATCH_TIME_SCALE=4
"$RSTWATCH_BIN" run --check
status=0
# RemoteHost tests boot a VM of their own: on the host only (a TCG guest in a
# TCG guest would take minutes to boot); so does the mixed run's remote part.
export RSTWATCH_REMOTE_BACKENDS=no
ctest --test-dir build -L 'privileged|scenarios' -E 'Soak|RemoteHost' --output-on-failure --timeout 300 "$@" ||
  status=$?
# An OOM kill seen by the agent as the systemd unit runs it: without
# CAP_SYS_ADMIN, Debian's kernels refuse the perf event of a classic
# tracepoint and the agent takes oom:mark_victim as a raw one.
echo "run-matrix: BackendOom with the agent under the unit's capabilities"
RSTWATCH_BIN=$PWD/tests/kernels/agent-as-unit.sh build/tests/scenarios/cause_scenarios_test \
  --gtest_filter='BackendOom.*' --gtest_brief=1 || status=$?
exit "$status"
