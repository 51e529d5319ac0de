#!/usr/bin/env bash
# The first GPU run in one command (<= 8 min on an H200 with torch + Triton, no internet):
#   OUT=/some/dir benchmarks/gpu_check.sh            # GPU: sparse + models tests on cuda, then gpu_check.py
#   OUT=/some/dir benchmarks/gpu_check.sh --cpu-smoke # the same steps, reduced, on CPU with TRITON_INTERPRET=1
# Writes into $OUT (default work_dirs/gpu_check): pytest.log, pytest.jsonl (one line: the suite's
# exit code and summary), gpu_check.jsonl (benchmarks/gpu_check.py's lines). Exit 1 if a step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-work_dirs/gpu_check}
PY=${PY:-python}
mkdir -p "$OUT"
if [ "${1:-}" = "--cpu-smoke" ]; then
    export TRITON_INTERPRET=1 PCSEG_TEST_DEVICES=cpu
    TESTS=(tests/models/test_models.py -k "batch_of_two")
    CHECK=(--device cpu --voxels 200 --unet-voxels 200 --repeats 1 --unet-paths torch)
    LIMIT=300
else
    export PCSEG_TEST_DEVICES=cuda
    TESTS=(tests/sparse tests/models)
    CHECK=(--device cuda)
    LIMIT=240
fi
status=0
timeout "$LIMIT" "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" > "$OUT/pytest.log" 2>&1
rc=$?
summary=$(tail -n 1 "$OUT/pytest.log" | tr -d '"\\')
printf '{"case": "pytest", "devices": "%s", "exit_code": %d, "summary": "%s"}\n' \
    "$PCSEG_TEST_DEVICES" "$rc" "$summary" | tee "$OUT/pytest.jsonl"
[ "$rc" -eq 0 ] || status=1
timeout 300 "$PY" benchmarks/gpu_check.py "${CHECK[@]}" > "$OUT/gpu_check.jsonl" 2> "$OUT/gpu_check.err" || status=1
cat "$OUT/gpu_check.jsonl"
[ "$status" -eq 0 ] || tail -n 20 "$OUT/gpu_check.err" >&2
exit "$status"
