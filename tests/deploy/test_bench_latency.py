"""benchmarks/bench_latency.py in its tiny mode: every line parses, executors agree with eager.

Eager, exported and me_eager only (ONNX and AOTInductor preparation take minutes;
tests/deploy/test_executors.py covers those executors). me_eager (MinkowskiEngine) is checked where
MinkowskiEngine imports (the peers' venv, benchmarks/peers.md) and must say ``skipped`` elsewhere."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HAS_ME = importlib.util.find_spec("MinkowskiEngine") is not None


def test_tiny_run_prints_one_checked_line_per_case_executor_and_thread():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_latency.py"), "--tiny", "--repeats", "1",
                           "--threads", "1", "--executors", "eager", "exported", "me_eager", "--profile"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["case"], r["executor"]) for r in lines] == [
        (c, e) for c in ("tiny_sweep", "tiny_room") for e in ("eager", "exported", "me_eager")]
    for r in lines:
        if r["executor"] == "me_eager" and not HAS_ME:
            assert r["skipped"].startswith("MinkowskiEngine not importable") and "min_ms" not in r, r
            continue
        assert "error" not in r and "skipped" not in r, r
        assert r["max_abs_diff"] <= 1e-4 and 0 < r["min_ms"] <= r["median_ms"] and r["voxels"] < r["points"]
        if r["executor"] == "me_eager":  # another engine: float32 rounding differs, so exactly 0 means no ME ran
            assert r["max_abs_diff"] > 0 and r["openblas_threads"] == 1, r
    assert all("voxelize_ms" in r for r in lines if r["executor"] == "eager")
    for r in lines:  # --profile: eager and exported say where their time goes, most first
        ops = r.get("top_ops")
        assert (ops is not None) == (r["executor"] in ("eager", "exported")), r
        if ops:
            assert all(name.startswith(("aten::", "pcseg::")) and ms >= 0 and 0 <= share for name, ms, share in ops), ops
            assert sum(ms for _, ms, _ in ops) <= r["profiled_ms"] * 1.01, r
            assert [ms for _, ms, _ in ops] == sorted((ms for _, ms, _ in ops), reverse=True)
            assert sum(share for _, _, share in ops) <= 1.01
