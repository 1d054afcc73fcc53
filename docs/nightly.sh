#!/bin/sh
# NestBench nightly: run an experiment with tags, gate it against the stored history, publish the
# JUnit file and the history page. The store ($NIGHTLY_STORE) is the history: keep it between runs.
#
#   NIGHTLY_EXPERIMENT   the experiment file (required), e.g. Suites/quickstart.yaml
#   NIGHTLY_STORE        results directory kept between nights (default /var/lib/nestbench-ci/results)
#   NIGHTLY_PUBLISH      where the night's files go (default /var/lib/nestbench-ci/publish)
#   NIGHTLY_MIN_HISTORY  runs of the last stable segment the gate needs (default 3)
#   NESTBENCH            the nestbench binary (default: nestbench on PATH)
#   arguments            passed to `nestbench run`: your own tags, e.g. --tag patch=mm-thp-v3
#
# Exit codes: 0 no regression (also the first night, which has no history yet), 2 regression,
# 3 a workload failed (results stored, no regression), 1 anything else.
set -u
NESTBENCH=${NESTBENCH:-nestbench}
EXPERIMENT_FILE=${NIGHTLY_EXPERIMENT:?set NIGHTLY_EXPERIMENT to the experiment file}
STORE=${NIGHTLY_STORE:-/var/lib/nestbench-ci/results}
PUBLISH=${NIGHTLY_PUBLISH:-/var/lib/nestbench-ci/publish}
MIN_HISTORY=${NIGHTLY_MIN_HISTORY:-3}
mkdir -p "$STORE" "$PUBLISH" || exit 1
rm -f "$PUBLISH/junit.xml" "$PUBLISH/history.html"

# 1. Run. Every run is tagged automatically (kernel release and command line of every layer, QEMU
#    version, NestBench version and commit, testbed); the arguments add the user's own tags.
run_status=0
"$NESTBENCH" run "$EXPERIMENT_FILE" --results "$STORE" --format markdown "$@" >"$PUBLISH/report.md" || run_status=$?
case $run_status in
0 | 3) ;;
*)
    echo "nightly: nestbench run failed (exit $run_status); see the log above" >&2
    exit 1
    ;;
esac

# 2. Gate the new run against the history: change points and the last stable segment; JUnit file.
gate_status=0
"$NESTBENCH" nightly latest --results "$STORE" --min-history "$MIN_HISTORY" --junit "$PUBLISH/junit.xml" \
    >"$PUBLISH/nightly.txt" || gate_status=$?
case $gate_status in
0 | 2 | 4) ;;
5) echo "nightly: no earlier runs of this experiment yet: nothing to gate against" >&2 && gate_status=0 ;;
*)
    echo "nightly: nestbench nightly failed (exit $gate_status)" >&2
    exit 1
    ;;
esac

# 3. The history page and a copy of the night's run (re-importable with nestbench import).
"$NESTBENCH" history --results "$STORE" --html "$PUBLISH/history.html" || exit 1
"$NESTBENCH" export latest --results "$STORE" >"$PUBLISH/run.json" || exit 1

if [ "$gate_status" -ne 0 ]; then exit "$gate_status"; fi
exit "$run_status"
