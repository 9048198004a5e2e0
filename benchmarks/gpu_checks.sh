#!/usr/bin/env bash
# The CUDA checks of issue 15, point 6, as one script for a machine with an NVIDIA GPU (CI stays CPU-only).
#
#   bash benchmarks/gpu_checks.sh [OUTDIR]          # from the project root; logs and JSON go to OUTDIR
#
# Runs, each with its own log: (1) the CUDA tests — the sync-debug test (non-snapshot steps never synchronise
# the host), the overlapped side-stream copy, online sums on the device; (2) benchmarks/recorder_overhead.py
# --device cuda (schedules a, b, c, overlapped and on-thread copy); (3) benchmarks/online_observables.py on
# CUDA at 10⁷ parameters (offline twin estimated); (4) benchmarks/snapshot_throughput.py: a 10⁸-parameter
# model's snapshots, GB/s to disk vs the device-to-host copy limit. The Python is `python3` (or $PYTHON);
# trajkit's pure-Python dependencies missing there (zarr, numcodecs, ...) are installed from ./.whl/ when that
# folder holds wheels (`pip download` them beside the project; see docs/ARCHITECTURE.md "GPU checks").
set -u -o pipefail
OUT=${1:-${OUT:-gpu-checks-out}}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if ! $PY -c "import zarr, numcodecs, pluggy, jsonschema" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -3
fi
export PYTHONPATH="$PWD:$PWD/plugins${PYTHONPATH:+:$PYTHONPATH}"
$PY - <<'PY' | tee "$OUT/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0))
PY
status=0
run() {  # name, command...: logs to $OUT/name.log, keeps going on failure
  local name=$1; shift
  echo "== $name: $*"
  ( time "$@" ) > "$OUT/$name.log" 2>&1 || { echo "   FAILED (see $OUT/$name.log)"; status=1; }
  tail -n 12 "$OUT/$name.log"
}
run cuda_tests $PY -m pytest -q -p no:cacheprovider tests/test_recorder.py tests/test_recorder_overlap.py \
    tests/test_online.py -k "cuda or CUDA or device or synchronise" -rs
run overhead $PY benchmarks/recorder_overhead.py --device cuda --configs a,b,c,sync --repeats 3 --json
run online $PY benchmarks/online_observables.py --device cuda --params 10000000 --offline estimate \
    --out "$OUT/online.json"
run throughput $PY benchmarks/snapshot_throughput.py --device cuda --params 100000000 --json
exit $status
