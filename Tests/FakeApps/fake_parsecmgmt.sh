#!/bin/bash
# A stand-in for PARSEC 3.0's bin/parsecmgmt, for NestBench's adapter tests (not PARSEC code).
# What matters is reproduced from parsecmgmt 3.0: the platform is ${PARSECPLAT} (or the detected
# <arch>-<os>, amd64-linux here) with ".<config>" of -c ALWAYS appended; the binary is
# pkgs/<group>/<name>/inst/<platform>/bin/<name>; a missing binary is an "[PARSEC] Error: ..."
# line; the run directory (<-d>/pkgs/<group>/<name>/run) gets the input archive unpacked; the
# gcc-hooks configuration puts the hooks library directory on LD_LIBRARY_PATH; and it exits 0
# whatever the program did. Before its first line parsecmgmt 3.0 starts ~300 processes (a
# `basename` per package configuration and alias): FAKE_STARTUP_SECONDS stands for that start-up
# (seconds here, minutes in a nested guest on an emulated host).
while getopts "a:p:c:i:n:d:" opt; do
  case $opt in
    a) action=$OPTARG ;; p) pkg=$OPTARG ;; c) config=$OPTARG ;; i) input=$OPTARG ;;
    n) threads=$OPTARG ;; d) rundir=$OPTARG ;; *) exit 1 ;;
  esac
done
[ "$action" = run ] || { echo "[PARSEC] Error: only -a run is faked"; exit 1; }
PARSECPLAT=${PARSECPLAT:-amd64-linux}.${config}
name=${pkg#parsec.}
dir=$(cd "$(dirname "$0")/.." && pwd)/pkgs/kernels/$name
sleep "${FAKE_STARTUP_SECONDS:-0}"
echo "[PARSEC] Benchmarks to run:  $pkg"
echo
echo "[PARSEC] [========== Running benchmark $pkg [1] ==========]"
bin=$dir/inst/$PARSECPLAT/bin/$name
if [ ! -x "$bin" ]; then
  echo "[PARSEC] Error: Binary '$bin' of package '$pkg' cannot be found."
  exit 1
fi
run=${rundir:-$dir}/pkgs/kernels/$name/run
mkdir -p "$run"
[ -f "$dir/inputs/input_$input.tar" ] && tar -x -f "$dir/inputs/input_$input.tar" -C "$run"
case $config in *hooks*) export LD_LIBRARY_PATH=$PARSECDIR/pkgs/libs/hooks/inst/$PARSECPLAT/lib ;; esac
cd "$run" || exit 1
args="$threads 10000 2000 100000.nets 32"
echo "[PARSEC] Running 'time $bin $args':"
echo "[PARSEC] [---------- Beginning of output ----------]"
"$bin" $args
echo "[PARSEC] [----------    End of output    ----------]"
echo "[PARSEC] Done."
exit 0
