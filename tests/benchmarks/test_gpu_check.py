"""benchmarks/gpu_check.sh end to end in its CPU smoke mode (Triton's interpreter), so the first GPU run
cannot fail on a typo: every step runs, every JSON line is written, the fused kernels agree with torch."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cpu_smoke_run_writes_every_line(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PY": sys.executable, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu-smoke"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    pytest_line = json.loads((tmp_path / "pytest.jsonl").read_text())
    assert pytest_line["exit_code"] == 0 and "1 passed" in pytest_line["summary"]
    records = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    by_case: dict[str, list] = {}
    for r in records:
        by_case.setdefault(r["case"], []).append(r)
    assert by_case["scene"][0]["triton"] is True
    agreement = by_case["fused_vs_torch"]
    assert len(agreement) == 4 and all(r["ok"] for r in agreement)          # {fp32, bf16} x {32, 64}
    assert len(by_case["determinism"]) == 8 and all(r["identical"] for r in by_case["determinism"])
    for case in ("subm3_fwd_32", "subm3_fwdbwd_32", "subm3_fwd_64", "subm3_fwdbwd_64"):
        assert {(r["path"], r["dtype"]) for r in by_case[case]} == {(p, d) for p in ("torch", "fused")
                                                                    for d in ("fp32", "bf16")}
    assert [r["path"] for r in by_case["res16unet34c_fwdbwd"]] == ["torch"]
    assert all(r["min_s"] > 0 for r in records if "min_s" in r)
