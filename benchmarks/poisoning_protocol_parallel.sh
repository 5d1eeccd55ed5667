#!/usr/bin/env bash
# The targeted-poisoning protocol (issue 3) as many one-trial processes at once, under a deadline, for a machine
# with a GPU and many cores: every (eps, trial seed) pair is one `bench_poisoning.py --trials 1 --set seed=S` run
# in its own workdir, and `poisonlab trials-curve` pools whatever finished into one curve per eps.
#
#   benchmarks/poisoning_protocol_parallel.sh OUTDIR [DEADLINE_S] [WORKERS] [-- extra bench_poisoning args]
#
# Env: EPS (default "128/255 96/255 64/255 32/255"), TRIALS (10), DEVICE (cuda), PYTHON (python3), RUNS (the
# trials' workdirs, default OUTDIR/runs; put them elsewhere where only a few files may come back from OUTDIR). Jobs are
# ordered seed-major (seed 0 at every eps, then seed 1, ...), so a run cut short by the deadline still covers
# every eps. Writes OUTDIR/curve/{index.html,curve.png,curve.json}, OUTDIR/results.tar.gz (every finished run's
# report/result.json, to pool later with other runs) and OUTDIR/log.txt.
set -u
out=${1:?usage: poisoning_protocol_parallel.sh OUTDIR [DEADLINE_S] [WORKERS] [-- bench args]}
deadline=${2:-480}
workers=${3:-$(($(nproc) - 2))}
shift $(($# < 3 ? $# : 3))
[ "${1:-}" = "--" ] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
runs=${RUNS:-$out/runs}
mkdir -p "$out" "$runs"
log="$out/log.txt"
jobs=()
for seed in $(seq 0 $((${TRIALS:-10} - 1))); do
  for eps in ${EPS:-128/255 96/255 64/255 32/255}; do
    jobs+=("$eps $seed")
  done
done
echo "$(date -u +%FT%TZ) ${#jobs[@]} jobs, $workers workers, deadline ${deadline}s, extra: $*" >"$log"
run_one() {  # eps seed; one trial, its own workdir and JSON name; $EXTRA: more bench args (word-split)
  local tag="gm${1%/255}_s$2"
  cd "$root" && PYTHONPATH="$root/src:$root/benchmarks${PYTHONPATH:+:$PYTHONPATH}" "$py" benchmarks/bench_poisoning.py \
    --eps "$1" --trials 1 --set "seed=$2" --victims 2 --no-clean --threads 1 --workdir "$runs/$tag" \
    --name "protocol_$tag" --set "runtime.device=${DEVICE:-cuda}" --set poison.ensemble=4 --set poison.stagger=true \
    --set poison.selection=gradient-norm $EXTRA >"$runs/$tag.log" 2>&1
  local rc=$?
  echo "$(date -u +%FT%TZ) $tag rc=$rc" >>"$log"
}
export -f run_one
EXTRA="$*"
export root runs py log DEVICE EXTRA
printf '%s\n' "${jobs[@]}" | timeout --signal=INT "$deadline" xargs -P "$workers" -L 1 bash -c 'run_one "$@"' _ || echo "$(date -u +%FT%TZ) deadline or a failed job (see above)" >>"$log"
mapfile -t done_runs < <(cd "$runs" && ls -d */*/report 2>/dev/null | xargs -r -n1 dirname)
echo "$(date -u +%FT%TZ) finished trials: ${#done_runs[@]}" >>"$log"
if [ "${#done_runs[@]}" -gt 0 ]; then
  (cd "$runs" && tar czf "$out/results.tar.gz" "${done_runs[@]/%//report/result.json}")
  PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" "$py" -m poisonlab.cli trials-curve \
    "${done_runs[@]/#/$runs/}" --out "$out/curve" >>"$log" 2>&1
fi
cat "$log"
