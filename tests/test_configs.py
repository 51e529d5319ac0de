"""Every YAML under configs/ loads and builds what it names: the exact list of shipped configs, each one's
model (parameters counted by hand from the architecture), dataset (class count and input channels of
the benchmark), transforms and method.

Nothing here reads data: the dataset arguments are checked against the builder's signature only.
"""
import inspect
import re
import runpy
import shlex
from pathlib import Path

import pytest

from pcseg.data.datasets import DATASETS
from pcseg.data.formats import S3DISReader, ScanNetReader, SemanticKITTIReader
from pcseg.data.transforms import build_transforms
from pcseg.engine.config import load_config, thaw
from pcseg.methods import build_method
from pcseg.models import build_model

REPO = Path(__file__).resolve().parents[1]
# configs/ovs/ holds 3D-OVS field-fitting settings (pcseg.methods.ovs.pipeline.OVSConfig), not training
# configs; tests/tools/test_ovs_cli.py loads those. configs/presets/ holds values the configs reference.
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml")
                 if p.relative_to(REPO / "configs").parts[0] not in ("ovs", "presets"))
MAKE_BUDGET = re.compile(r"^#\s*(python tools/make_budget\.py .*)$", re.MULTILINE)

# The benchmarks' facts: ScanNet v2's 20-class benchmark on RGB, S3DIS's 13 classes on RGB, SemanticKITTI's
# 19 classes on remission; the synthetic images (configs/image2d) carry 19 classes in RGB.
BENCHMARKS = {"ScanNet": (20, 3), "S3DIS": (13, 3), "SemanticKITTI": (19, 1), "ImageFolder": (19, 3)}
READERS = {"ScanNet": ScanNetReader, "S3DIS": S3DISReader, "SemanticKITTI": SemanticKITTIReader}

# config → (model, D, base dataset, method); the list of shipped configs is exactly these keys
SHIPPED = {
    "demo/scannet_sparse.yaml": ("Res16UNet14A", 3, "ScanNet", "Supervised"),
    "experiments/cpcm/consistency.yaml": ("Res16UNet14A", 3, "ScanNet", "CPCM"),
    "experiments/cpcm/cpcm.yaml": ("Res16UNet14A", 3, "ScanNet", "CPCM"),
    "experiments/cpcm/supervised.yaml": ("Res16UNet14A", 3, "ScanNet", "Supervised"),
    "image2d/sparse_pixels.yaml": ("MinkUNet14A", 2, "ImageFolder", "Supervised"),
    "image2d/supervised.yaml": ("MinkUNet14A", 2, "ImageFolder", "Supervised"),
    **{f"s3dis/{name}.yaml": ("Res16UNet34C", 3, "S3DIS", method) for name, method in (
        ("base", "Supervised"), ("cpcm_0.01pct", "CPCM"), ("cpcm_0.1pct", "CPCM"), ("hpal_0.02pct", "HPAL"),
        ("hpal_0.07pct", "HPAL"), ("hpal_0.43pct", "HPAL"), ("sparse_0.01pct", "Supervised"),
        ("sparse_0.1pct", "Supervised"), ("supervised", "Supervised"))},
    **{f"scannet/{name}.yaml": ("Res16UNet34C", 3, "ScanNet", method) for name, method in (
        ("base", "Supervised"), ("cpcm_0.01pct", "CPCM"), ("cpcm_0.1pct", "CPCM"), ("hpal_0.1pct", "HPAL"),
        ("sparse_0.01pct", "Supervised"), ("sparse_0.1pct", "Supervised"), ("sparse_20pts", "Supervised"),
        ("supervised", "Supervised"))},
    **{f"semantickitti/{name}.yaml": ("Res16UNet34C", 3, "SemanticKITTI", method) for name, method in (
        ("base", "Supervised"), ("cpcm_0.01pct", "CPCM"), ("cpcm_0.1pct", "CPCM"),
        ("slidr_finetune_1pct", "Supervised"), ("slidr_linear_probe", "Supervised"), ("slidr_pretrain", "SLidR"),
        ("sparse_0.1pct", "Supervised"), ("supervised", "Supervised"))},
}

# the standard widths (MinkowskiEngine / SpatioTemporalSegmentation zoo): 4 encoder, 4 decoder stages
PLANES_A, PLANES_C = (32, 64, 128, 256, 128, 128, 96, 96), (32, 64, 128, 256, 256, 128, 96, 96)
LAYERS_14, LAYERS_34 = (1,) * 8, (2, 3, 4, 6, 2, 2, 2, 2)
ARCHITECTURES = {"Res16UNet14A": (PLANES_A, LAYERS_14, 3), "Res16UNet34C": (PLANES_C, LAYERS_34, 3),
                 "MinkUNet14A": (PLANES_A, LAYERS_14, 5)}


def unet_parameters(name: str, c_in: int, classes: int, dim: int) -> int:
    """Parameters of a MinkUNet-family net, counted from its description.

    Convolutions have K**D * C_in * C_out weights and no bias, BatchNorm 2 C. Stem: conv(stem kernel,
    C_in → 32) + BN. Four encoder levels: conv(2, c → c) + BN, then residual blocks to planes[i]. Four
    decoder levels: transposed conv(2, c → planes[4+i]) + BN, then blocks on the concatenation with the
    encoder skip (32, planes[0..2] in reverse). A block: conv3 + BN + conv3 + BN, plus 1x1 conv + BN
    where the channels change. Classifier: Linear(c → classes) with bias.
    """
    planes, layers, stem = ARCHITECTURES[name]

    def conv(k: int, a: int, b: int) -> int:
        return k ** dim * a * b

    def block(a: int, b: int) -> int:
        return conv(3, a, b) + 2 * b + conv(3, b, b) + 2 * b + (a * b + 2 * b if a != b else 0)

    total, c, skips = conv(stem, c_in, 32) + 2 * 32, 32, [32]
    for i in range(4):
        total += conv(2, c, c) + 2 * c + block(c, planes[i]) + (layers[i] - 1) * block(planes[i], planes[i])
        c = planes[i]
        skips.append(c)
    for i in range(4):
        w, skip = planes[4 + i], skips[3 - i]
        total += conv(2, c, w) + 2 * w + block(w + skip, w) + (layers[4 + i] - 1) * block(w, w)
        c = w
    return total + c * classes + classes


def test_the_shipped_configs_are_exactly_these():
    assert {p.relative_to(REPO / "configs").as_posix() for p in CONFIGS} == set(SHIPPED)


def test_the_hand_count_matches_the_model_zoo():
    # MinkowskiEngine's Res16UNet34C with 3 inputs and 20 classes: 37.85 M parameters
    assert unet_parameters("Res16UNet34C", 3, 20, 3) == pytest.approx(37.85e6, abs=0.05e6)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(REPO / "configs").as_posix())
def test_config_loads_and_builds(path):
    model_name, dim, base, method_name = SHIPPED[path.relative_to(REPO / "configs").as_posix()]
    cfg = load_config(path)
    classes, channels = BENCHMARKS[base]
    assert thaw(cfg.model) == {"name": model_name, "in_channels": channels, "num_classes": classes, "D": dim}
    assert cfg.data.name == base or thaw(cfg.data.kwargs)["dataset"] == base
    if base in READERS:
        assert READERS[base].NUM_CLASSES == classes
    else:
        assert thaw(cfg.data.kwargs)["num_classes"] == classes
    model = build_model(thaw(cfg.model))
    assert sum(p.numel() for p in model.parameters()) == unet_parameters(model_name, channels, classes, dim)
    builder = DATASETS[cfg.data.name]
    for split in (cfg.data.train, cfg.data.val):
        inspect.signature(builder).bind(**{**thaw(cfg.data.kwargs), **thaw(split.kwargs)}, split=split.split,
                                        transforms=(), budget=None, seed=0)
        if split.transforms:
            build_transforms(thaw(split.transforms))
    assert type(build_method(thaw(cfg.method))).__name__ == method_name


@pytest.mark.parametrize("path", [p for p in CONFIGS if MAKE_BUDGET.search(p.read_text())],
                         ids=lambda p: p.relative_to(REPO / "configs").as_posix())
def test_budget_command_in_the_comment_writes_what_the_config_reads(path):
    """The ``make_budget.py`` line a sparse config shows names this file and the settings its path encodes."""
    commands = MAKE_BUDGET.findall(path.read_text())
    assert len(commands) == 1, f"{path}: expected one '# python tools/make_budget.py ...' comment line"
    parse_args = runpy.run_path(str(REPO / "tools" / "make_budget.py"))["parse_args"]
    args = parse_args(shlex.split(commands[0])[2:])
    assert (REPO / args.config).resolve() == path.resolve() and args.out is None
    assert Path(load_config(path).data.budget).name == f"{args.kind}_{args.amount}_seed{args.seed}"
