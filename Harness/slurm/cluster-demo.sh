#!/usr/bin/env bash
# `make cluster-demo`: Suites/cluster-demo.yaml as 2 shards through Slurm on a loopback cluster
# (Harness/slurm/loopback-cluster.sh), merged into one store, and the campaign's report printed.
# The daemons it started are stopped by pid at the end, also on failure and Ctrl-C.
#
#   cluster-demo.sh [NESTBENCH_BINARY]      (default: .build/debug/nestbench)
# Everything it writes is under one new directory in /tmp (named at the start and the end).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
nestbench=$(realpath -- "${1:-$root/.build/debug/nestbench}")
cluster=$root/Harness/slurm/loopback-cluster.sh
experiment=$root/Suites/cluster-demo.yaml
[ -x "$nestbench" ] || {
    echo "cluster-demo: $nestbench: not built (make build)" >&2
    exit 1
}

"$cluster" install
work=$(mktemp -d /tmp/nestbench-cluster-demo.XXXXXX)
chmod 755 "$work"
echo "cluster-demo: working in $work" >&2
state=$work/slurm
share=$work/share

stopped=0
stop_cluster() {
    if [ "$stopped" = 0 ]; then
        stopped=1
        "$cluster" stop "$state" || true
    fi
}
trap stop_cluster EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

SLURM_CONF=$("$cluster" start "$state")
export SLURM_CONF
# The jobs inherit this environment (sbatch --export=ALL): nestbench's knob journal stays private.
export NESTBENCH_STATE_DIR=$work/nestbench-state

submitted=$("$nestbench" slurm "$experiment" --shards 2 --share "$share" --submit)
echo "$submitted"
campaign=$(awk '$1 == "campaign" { print $2 }' <<<"$submitted")
array=$(awk '$1 == "shards" { print $2 }' <<<"$submitted")
merge=$(awk '$1 == "merge" { print $2 }' <<<"$submitted")

# Until every job of the campaign has left the queue (at most 15 minutes).
deadline=$((SECONDS + 900))
while [ -n "$(squeue -h -j "$array,$merge" -o %i 2>/dev/null || true)" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "cluster-demo: the jobs did not finish in 15 minutes" >&2
        squeue >&2 || true
        exit 1
    fi
    sleep 2
done

status=0
for log in "$share"/logs/*.out; do
    echo "== $log" >&2
    cat "$log" >&2
done
merge_state=$(scontrol show job "$merge" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -1 || true)
echo "cluster-demo: merge job $merge: ${merge_state:-unknown state}" >&2
[ "$merge_state" = JobState=COMPLETED ] || status=1

echo "== experiment runs in $share/merged"
"$nestbench" list --results "$share/merged" || status=1
echo "== campaign $campaign: $share/report.txt (HTML: $share/report.html)"
cat "$share/report.txt" || status=1
echo "cluster-demo: results in $work" >&2
exit "$status"
