# Shared by bench_runs.sh and paired_runs.sh (sourced from the repository root, not run).
# Sets `harness` (the harness folder, the script's first argument, ../anchors-run by default)
# and `data` (its layer data).
harness=$(realpath "${1:-../anchors-run}")
data=$harness/build/data

# The path of the bench binary cargo builds (its "Executable" line).
binary() {
  "$@" 2>&1 | sed -n 's/.*Executable benches\/anchors.rs (\(.*\))$/\1/p' | tail -n 1
}

# Runs `$2 ...` (a harness run.sh command line) `$1` times and prints the result folders it
# added under `$harness/results`, one per line.
harness_runs() {
  local runs=$1 before run
  shift
  before=$(ls "$harness/results" 2>/dev/null || true)
  for _ in $(seq "$runs"); do
    "$@" > /dev/null
  done
  for run in $(ls "$harness/results"); do
    if [[ -d $harness/results/$run ]] && ! grep -qx "$run" <<< "$before"; then
      echo "$harness/results/$run"
    fi
  done
}
