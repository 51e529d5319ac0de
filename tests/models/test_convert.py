"""MinkowskiEngine checkpoint conversion: kernel order against dense conv3d, names, the CLI and its errors.

The MinkowskiEngine facts used here (measured on ME 0.5.4, see benchmarks/me_checkpoint_parity.py):
kernels are (K, C_in, C_out) with the offsets enumerated first axis fastest, odd kernels centred,
even kernels anchored at the lower corner; a one-offset stride-1 kernel is (C_in, C_out).
"""
import runpy
from itertools import product
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pcseg.engine.build import init_weights
from pcseg.engine.checkpoint import load_checkpoint
from pcseg.models import build_model
from pcseg.models.minkunet import LAYERS, PLANES
from pcseg.models.convert import convert_minkowski_state_dict, me_kernel_to_pcseg
from pcseg.sparse import SparseConv, SparseTensor

CONVERT = runpy.run_path(str(Path(__file__).resolve().parents[2] / "tools" / "convert_checkpoint.py"))["main"]


def me_offsets(kernel_size):
    """Kernel-grid indices (i1, ..., iD) in MinkowskiEngine's order: first axis fastest."""
    return [tuple(reversed(idx)) for idx in product(*(range(k) for k in reversed(kernel_size)))]


def dense_weight_from_me(kernel, kernel_size):
    """(C_out, C_in, k1, k2, k3) conv3d weight holding ME kernel (K, C_in, C_out) at its offsets."""
    dense = torch.zeros(kernel.shape[2], kernel.shape[1], *kernel_size)
    for n, idx in enumerate(me_offsets(kernel_size)):
        dense[(slice(None), slice(None), *idx)] = kernel[n].t()
    return dense


def grid_scene(extent=(9, 7, 8), channels=3, density=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(channels, *extent, generator=g) * (torch.rand(extent, generator=g) < density)
    sites = torch.nonzero(dense.abs().sum(0) > 0)
    coords = torch.cat([torch.zeros(len(sites), 1, dtype=torch.int64), sites], 1).int()
    return dense, sites, SparseTensor(dense[:, sites[:, 0], sites[:, 1], sites[:, 2]].t().contiguous(), coords)


@pytest.mark.parametrize("kernel_size", [(3, 3, 3), (3, 1, 5), (5, 3, 1)])
def test_converted_submanifold_kernel_equals_dense_conv3d(kernel_size):
    dense, sites, x = grid_scene()
    me_kernel = torch.randn(torch.Size(kernel_size).numel(), 3, 4, generator=torch.Generator().manual_seed(1))
    conv = SparseConv(3, 4, kernel_size, dim=3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(me_kernel_to_pcseg(me_kernel, kernel_size))
    expected = F.conv3d(dense[None], dense_weight_from_me(me_kernel, kernel_size),
                        padding=[k // 2 for k in kernel_size])[0]
    torch.testing.assert_close(conv(x).F, expected[:, sites[:, 0], sites[:, 1], sites[:, 2]].t(),
                               rtol=1e-5, atol=1e-5)


def test_converted_strided_kernel_equals_dense_conv3d():
    dense, _, x = grid_scene(extent=(8, 6, 10))
    me_kernel = torch.randn(8, 3, 5, generator=torch.Generator().manual_seed(2))
    conv = SparseConv(3, 5, 2, stride=2, dim=3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(me_kernel_to_pcseg(me_kernel, (2, 2, 2)))
    out = conv(x)
    expected = F.conv3d(dense[None], dense_weight_from_me(me_kernel, (2, 2, 2)), stride=2)[0]
    c = out.C[:, 1:].long() // 2
    torch.testing.assert_close(out.F, expected[:, c[:, 0], c[:, 1], c[:, 2]].t(), rtol=1e-5, atol=1e-5)


def test_one_offset_kernel_and_a_hand_picked_offset():
    assert me_kernel_to_pcseg(torch.arange(6.0).reshape(2, 3), (1, 1, 1)).shape == (1, 2, 3)
    kernel = torch.arange(27.0)[:, None, None]
    # offset (+1, 0, -1): ME index 2 + 3*1 + 9*0 = 5, pcseg (row-major) index 2*9 + 1*3 + 0 = 21
    assert me_kernel_to_pcseg(kernel, (3, 3, 3))[21].item() == 5.0
    with pytest.raises(ValueError, match=r"\(8, 3, 4\).*kernel_size \(3, 3, 3\)"):
        me_kernel_to_pcseg(torch.zeros(8, 3, 4), (3, 3, 3))


def me_state_dict(layers, planes, stem, c_in=3, classes=20, seed=0):
    """Random tensors under MinkowskiEngine's MinkUNet / Res16UNet names and shapes."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def conv(name, k, a, b):
        state[f"{name}.kernel"] = torch.randn(*((k, a, b) if k > 1 else (a, b)), generator=g)

    def bn(name, c):
        for field in ("weight", "bias", "running_mean", "running_var"):
            state[f"{name}.bn.{field}"] = torch.rand(c, generator=g) + 0.5
        state[f"{name}.bn.num_batches_tracked"] = torch.tensor(7)

    def stage(name, blocks, a, b):
        for j in range(blocks):
            conv(f"{name}.{j}.conv1", 27, a if j == 0 else b, b)
            bn(f"{name}.{j}.norm1", b)
            conv(f"{name}.{j}.conv2", 27, b, b)
            bn(f"{name}.{j}.norm2", b)
            if j == 0 and a != b:
                conv(f"{name}.{j}.downsample.0", 1, a, b)
                bn(f"{name}.{j}.downsample.1", b)

    conv("conv0p1s1", stem ** 3, c_in, 32)
    bn("bn0", 32)
    width, skips = 32, [32]
    for i in range(1, 5):
        conv(f"conv{i}p{2 ** (i - 1)}s2", 8, width, width)
        bn(f"bn{i}", width)
        stage(f"block{i}", layers[i - 1], width, planes[i - 1])
        width = planes[i - 1]
        skips.append(width)
    skips.pop()
    for i in range(4, 8):
        conv(f"convtr{i}p{2 ** (8 - i)}s2", 8, width, planes[i])
        bn(f"bntr{i}", planes[i])
        stage(f"block{i + 1}", layers[i], planes[i] + skips.pop(), planes[i])
        width = planes[i]
    state["final.kernel"] = torch.randn(width, classes, generator=g)
    state["final.bias"] = torch.randn(1, classes, generator=g)
    return state


@pytest.mark.parametrize("name, layers, planes, stem", [("Res16UNet14A", 14, "A", 3), ("MinkUNet18A", 18, "A", 5),
                                                        ("Res16UNet34C", 34, "C", 3)])
def test_every_tensor_finds_its_place(name, layers, planes, stem):
    state = me_state_dict(LAYERS[layers], PLANES[planes], stem)
    model = build_model({"name": name, "in_channels": 3, "num_classes": 20, "D": 3})
    converted = convert_minkowski_state_dict({f"module.{k}": v for k, v in state.items()}, model)
    model.load_state_dict(converted)  # strict: every key present, every shape right
    own = model.state_dict()
    torch.testing.assert_close(own["head.module.weight"], state["final.kernel"].t())
    torch.testing.assert_close(own["head.module.bias"], state["final.bias"][0])
    torch.testing.assert_close(own["dec.0.0.norm1.module.running_var"], state["block5.0.norm1.bn.running_var"])
    torch.testing.assert_close(own["up.1.0.weight"], me_kernel_to_pcseg(state["convtr5p8s2.kernel"], (2, 2, 2)))
    torch.testing.assert_close(own["enc.0.0.conv1.weight"][21], state["block1.0.conv1.kernel"][5])


def test_a_checkpoint_of_another_model_is_refused_by_name():
    state = me_state_dict(LAYERS[34], PLANES["C"], 3)
    model = build_model({"name": "Res16UNet14A", "in_channels": 3, "num_classes": 20, "D": 3})
    with pytest.raises(ValueError, match=r"ckpt\.pth: does not fit MinkUNet: unknown keys .*block1\.1\.conv1"):
        convert_minkowski_state_dict(state, model, source="ckpt.pth")


def test_cli_converts_a_training_checkpoint_for_init_from(tmp_path):
    state = me_state_dict(LAYERS[14], PLANES["A"], 3, c_in=4, classes=13)
    source, target = tmp_path / "me.pth", tmp_path / "pcseg.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 120, "best_val": 71.2}, source)
    CONVERT(["--input", str(source), "--model", "Res16UNet14A", "--out", str(target)])
    ckpt = load_checkpoint(target)
    assert ckpt["architecture"] == {"name": "Res16UNet14A", "in_channels": 4, "num_classes": 13, "D": 3}
    model = build_model(ckpt["architecture"])
    assert init_weights(model, target) == []  # model.init_from: nothing left at its fresh value
    torch.testing.assert_close(model.state_dict()["stem.1.module.running_mean"], state["bn0.bn.running_mean"])


def test_cli_errors_name_the_file_and_what_was_expected(tmp_path):
    with pytest.raises(SystemExit, match="--input: checkpoint .*missing.pth not found"):
        CONVERT(["--input", str(tmp_path / "missing.pth"), "--model", "Res16UNet14A", "--out", str(tmp_path / "o")])
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, other)
    with pytest.raises(SystemExit, match=r"resnet\.pth: no 'conv0p1s1\.kernel'.*keys: conv1\.weight"):
        CONVERT(["--input", str(other), "--model", "Res16UNet14A", "--out", str(tmp_path / "o")])
    wrong = tmp_path / "me34.pth"
    torch.save(me_state_dict(LAYERS[34], PLANES["C"], 3), wrong)
    with pytest.raises(SystemExit, match=r"me34\.pth: does not fit .*check --model"):
        CONVERT(["--input", str(wrong), "--model", "Res16UNet14A", "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
