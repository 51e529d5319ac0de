"""benchmarks/_protocol.py and the protocol files: loading, validation, run expansion, scheduling order,
the results table. No test trains or evaluates anything."""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import _protocol as P  # noqa: E402

from pcseg.engine.config import load_config  # noqa: E402
from pcseg.utils.errors import InputError  # noqa: E402

PROTOCOLS = REPO / "benchmarks" / "protocols"
TRAINING = {"slidr_v1": ("teacher",), "cpcm_v1": (), "hpal_v1": ()}  # protocol -> its script's extra sections


OVS = ("ovs_v1", "ovs_v2")  # benchmarks/ovs_lifting.py's protocols (no stages; its sections ovs, encoder)


def _load(name: str) -> P.Protocol:
    if name in OVS:
        return P.load_protocol(PROTOCOLS / f"{name}.yaml", ("ovs", "encoder"), stages=False)
    return P.load_protocol(PROTOCOLS / f"{name}.yaml", TRAINING[name])


def test_every_protocol_file_is_covered() -> None:
    assert sorted(p.stem for p in PROTOCOLS.glob("*.yaml")) == sorted([*TRAINING, *OVS])


@pytest.mark.parametrize("name", [*TRAINING, *OVS])
def test_protocol_loads_with_five_seeds_and_disjoint_generator_seeds(name: str) -> None:
    protocol = _load(name)
    assert protocol.name == name and len(protocol.seeds) >= 5
    seeds = {}
    for split in P.SPLITS:
        spec = protocol.data["splits"][split]
        seeds[split] = set(spec.get("generator_seeds", [spec.get("generator_seed")]))
    assert not seeds["train"] & seeds["val"] and not seeds["train"] & seeds["test"] and not seeds["val"] & seeds["test"]


@pytest.mark.parametrize("name", list(TRAINING))
def test_protocol_overrides_apply_to_the_shipped_configs(name: str, tmp_path: Path) -> None:
    protocol = _load(name)
    runs = P.expand(protocol, tmp_path)
    assert len({r.work_dir for r in runs}) == len(runs)
    for run in runs:
        assert run.config.is_relative_to(REPO / "configs")
        cfg = load_config(run.config, run.overrides)
        assert cfg.seed == run.seed
        if run.scored:
            load_config(run.config, run.test_overrides)
            assert str(tmp_path) in run.test_overrides[-1]  # the test split, not val


def test_cpcm_expansion_rows_budgets_seeds(tmp_path: Path) -> None:
    runs = P.expand(_load("cpcm_v1"), tmp_path)
    assert len(runs) == 3 * 2 * 5
    first = runs[0]
    assert (first.row, first.budget, first.seed) == ("supervised", "0.1pct", 0)
    assert first.config == REPO / "configs/scannet/sparse_0.1pct.yaml"
    assert f"data.budget={tmp_path}/budgets/ratio_0.001_seed0" in first.overrides
    last = runs[-1]
    assert (last.row, last.budget, last.seed) == ("cpcm", "0.01pct", 4)
    assert last.config == REPO / "configs/scannet/cpcm_0.01pct.yaml"
    assert last.work_dir == tmp_path / "runs/cpcm/0.01pct/seed4"
    cfg = load_config(last.config, last.overrides)
    assert (cfg.method["grid"], cfg.method["weight"]) == (8, 10.0)  # the shipped paper pair at 0.01 %


def test_slidr_downstream_runs_wait_for_their_backbone(tmp_path: Path) -> None:
    runs = P.expand(_load("slidr_v1"), tmp_path)
    deps = P.dependencies(runs)
    assert deps["finetune_1pct/-/superpixel/seed3"] == ("pretrain/-/superpixel/seed3",)
    assert deps["linear_probe/-/point/seed0"] == ("pretrain/-/point/seed0",)
    assert deps["finetune_1pct/-/random/seed0"] == ()
    assert deps["pretrain/-/point/seed0"] == ()


# --- a hand-made protocol ---------------------------------------------------------------------------------

PROTOCOL = """\
name: toy_v1
seeds: [0, 1, 2]
data:
  splits:
    train: {generator_seed: 11}
    val: {generator_seed: 12}
    test: {generator_seed: 13}
budgets:
  few: {kind: ratio, amount: 0.01, out: "${out}/b_${seed}"}
common_overrides: ["seed=${seed}"]
pretrain:
  tool: tools/train.py
  config: configs/scannet/supervised.yaml
  work_dir: "${out}/pre/${row}/${seed}"
  rows: {ssl: []}
downstream:
  task:
    tool: tools/train.py
    config: configs/scannet/supervised.yaml
    work_dir: "${out}/task/${row}/${budget}/${seed}"
    budgets: [few]
    rows:
      base: ["data.budget=${budget_dir}"]
      ours: ["data.budget=${budget_dir}", "model.init_from=${out}/pre/ssl/${seed}/backbone.pth"]
metric:
  checkpoint: model_last.pth
  overrides: ["data.val.kwargs.root=${out}/test"]
  paired: [ours - base]
"""


def _write(tmp_path: Path, text: str, name: str = "toy_v1") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_expansion_of_a_hand_made_protocol(tmp_path: Path) -> None:
    protocol = P.load_protocol(_write(tmp_path, PROTOCOL))
    runs = P.expand(protocol, tmp_path / "out")
    out = (tmp_path / "out").resolve()
    assert [r.key for r in runs] == ["pretrain/-/ssl/seed0", "pretrain/-/ssl/seed1", "pretrain/-/ssl/seed2",
                                     "task/few/base/seed0", "task/few/base/seed1", "task/few/base/seed2",
                                     "task/few/ours/seed0", "task/few/ours/seed1", "task/few/ours/seed2"]
    ours1 = runs[7]
    assert ours1.overrides == ("seed=1", f"data.budget={out}/b_1", f"model.init_from={out}/pre/ssl/1/backbone.pth")
    assert ours1.test_overrides == (*ours1.overrides, f"data.val.kwargs.root={out}/test")
    assert ours1.work_dir == out / "task/ours/few/1" and ours1.scored and not runs[1].scored
    assert runs[1].test_overrides == ()
    assert P.dependencies(runs)["task/few/ours/seed1"] == ("pretrain/-/ssl/seed1",)


@pytest.mark.parametrize("edit, message", [
    (("name: toy_v1", "name: toy_v2"), "name: expected the file's stem 'toy_v1'"),
    (("seeds: [0, 1, 2]", "seeds: [0, 1, 1]"), "seeds: expected distinct seeds"),
    (("test: {generator_seed: 13}", "test: {generator_seed: 11}"),
     "data.splits.test.generator_seed: generator seed 11 is also used by data.splits.train.generator_seed"),
    (("test: {generator_seed: 13}", "test: {root: x}"), "data.splits.test: expected a generator_seed"),
    (("kind: ratio", "kind: rattio"), "budgets.few.kind: expected one of ratio, points_per_scene, got 'rattio'"),
    (("b_${seed}", "b"), "budgets.few.out: expected a folder containing ${seed}"),
    (("tool: tools/train.py\n  config", "tool: tools/trian.py\n  config"), "pretrain.tool: expected one of"),
    (("budgets: [few]", "budgets: [many]"), "downstream.task.budgets[0]: expected a budget of the budgets section"),
    (("paired: [ours - base]", "paired: [ours - baseline]"), "metric.paired[0]: expected rows of every downstream"),
    (("paired: [ours - base]", "paired: [ours minus base]"), "metric.paired[0]: expected '<row> - <row>'"),
    (("common_overrides: [\"seed=${seed}\"]", "common_overrides: [seed]"),
     "common_overrides[0]: expected a dotted key=value override, got 'seed'"),
    (("metric:", "metrics: {}\nmetric:"), "<top level>: unknown key(s) metrics"),
])
def test_bad_protocols_are_refused_with_file_and_field(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    assert edit[0] in PROTOCOL
    path = _write(tmp_path, PROTOCOL.replace(edit[0], edit[1], 1))
    with pytest.raises(InputError) as err:
        P.load_protocol(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


@pytest.mark.parametrize("edit, message", [
    (("${out}/pre/${row}/${seed}", "${out}/pre/${rows}/${seed}"), "pretrain.work_dir: unknown variable ${rows}"),
    (("${out}/task/${row}/${budget}/${seed}", "${out}/task/${budget}/${seed}"),
     "share"),
    (("config: configs/scannet/supervised.yaml\n  work_dir", "config: configs/scannet/nope.yaml\n  work_dir"),
     "pretrain.config: expected a shipped config file"),
])
def test_bad_templates_are_refused_on_expansion(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    assert edit[0] in PROTOCOL
    protocol = P.load_protocol(_write(tmp_path, PROTOCOL.replace(edit[0], edit[1], 1)))
    with pytest.raises(InputError, match="toy_v1.yaml: ") as err:
        P.expand(protocol, tmp_path / "out")
    assert message in str(err.value)


def _finish(run: P.Run, test: float | None, val: float | None = None) -> None:
    """A run's files as the tools write them: wall_seconds.txt, log.jsonl (val record), test.json."""
    run.work_dir.mkdir(parents=True, exist_ok=True)
    (run.work_dir / "wall_seconds.txt").write_text("12.0\n")
    if val is not None:
        (run.work_dir / "log.jsonl").write_text(json.dumps({"type": "train", "loss": 1.0}) + "\n"
                                                + json.dumps({"type": "val", "miou": val}) + "\n")
    if test is not None:
        (run.work_dir / P.TEST_FILE).write_text(json.dumps({"miou": test}))


def test_table_mean_std_and_paired_difference_from_hand_made_metric_files(tmp_path: Path) -> None:
    protocol = P.load_protocol(_write(tmp_path, PROTOCOL))
    runs = {r.key: r for r in P.expand(protocol, tmp_path / "out")}
    # base: 30, 32, 34 -> mean 32.0, sample std 2.0; ours: 31, 35, 36 -> 34.0, std sqrt(7) = 2.6458
    # ours - base: +1, +3, +2 -> 2.0 ± 1.0
    for seed, (base, ours) in enumerate([(0.30, 0.31), (0.32, 0.35), (0.34, 0.36)]):
        _finish(runs[f"task/few/base/seed{seed}"], base, val=0.5)
        _finish(runs[f"task/few/ours/seed{seed}"], ours)
    results = P.collect(protocol, list(runs.values()))
    assert results["task"]["few"]["base"]["1"] == {"test_miou": 0.32, "val_miou": 0.5, "seconds": 12.0}
    assert results["task"]["few"]["ours"]["0"]["val_miou"] is None
    assert P.table(protocol, results).splitlines() == [
        "**task**", "", "| row | few |", "|---|---|",
        "| base | 32.0 ± 2.0 (30.0, 32.0, 34.0) |",
        "| ours | 34.0 ± 2.6 (31.0, 35.0, 36.0) |",
        "| ours − base, paired | 2.0 ± 1.0 (1.0, 3.0, 2.0) |"]


def test_table_counts_missing_seeds_and_pairs_only_common_ones(tmp_path: Path) -> None:
    protocol = P.load_protocol(_write(tmp_path, PROTOCOL))
    runs = {r.key: r for r in P.expand(protocol, tmp_path / "out")}
    _finish(runs["task/few/base/seed0"], 0.20)
    _finish(runs["task/few/base/seed2"], 0.40)
    _finish(runs["task/few/ours/seed2"], 0.45)
    _finish(runs["task/few/ours/seed1"], None)  # trained, not yet evaluated
    lines = P.table(protocol, P.collect(protocol, list(runs.values()))).splitlines()
    assert lines[4:] == ["| base | 30.0 ± 14.1 (20.0, 40.0) [2/3 seeds] |",
                         "| ours | 45.0 ± nan (45.0) [1/3 seeds] |",
                         "| ours − base, paired | 5.0 ± nan (5.0) [1/3 seeds] |"]


def test_schedule_respects_dependencies_and_skips_finished_runs(tmp_path: Path) -> None:
    protocol = P.load_protocol(_write(tmp_path, PROTOCOL))
    runs = P.expand(protocol, tmp_path / "out")
    by_key = {r.key: r for r in runs}
    _finish(by_key["task/few/base/seed0"], 0.3)  # finished before: not run again
    done_at: dict[str, int] = {}
    lock = threading.Lock()

    def execute(run: P.Run) -> None:
        with lock:
            for dep in P.dependencies(runs)[run.key]:
                assert dep in done_at, f"{run.key} started before {dep} finished"
            done_at[run.key] = len(done_at)

    started = P.schedule(runs, execute, jobs=2)
    assert sorted(started) == sorted(k for k in by_key if k != "task/few/base/seed0")
    assert started.index("task/few/ours/seed2") > started.index("pretrain/-/ssl/seed2")


def test_schedule_skips_the_dependants_of_a_failed_run(tmp_path: Path) -> None:
    protocol = P.load_protocol(_write(tmp_path, PROTOCOL))
    runs = P.expand(protocol, tmp_path / "out")
    ran = []

    def execute(run: P.Run) -> None:
        ran.append(run.key)
        if run.key == "pretrain/-/ssl/seed1":
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match=r"pretrain/-/ssl/seed1: boom.*task/few/ours/seed1: a run it needs failed"):
        P.schedule(runs, execute, jobs=1)
    assert "task/few/ours/seed1" not in ran and "task/few/ours/seed2" in ran and len(ran) == 8


def test_generate_once_reuses_and_refuses_changed_settings(tmp_path: Path) -> None:
    calls = []
    P.generate_once(tmp_path, "train", {"seed": 1}, lambda: calls.append(1))
    P.generate_once(tmp_path, "train", {"seed": 1}, lambda: calls.append(2))
    assert calls == [1]
    with pytest.raises(InputError, match=r"\.generated_train\.json: train: written with \{'seed': 1\}"):
        P.generate_once(tmp_path, "train", {"seed": 2}, lambda: calls.append(3))
