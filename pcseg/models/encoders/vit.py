"""CLIP and DINO ViTs (image towers) and CLIP's text tower, loaded by key from local checkpoints.

Image encoders are a minimal ViT (:class:`VisionTransformer`) whose weights load by key from
checkpoints in two namings (:func:`load_vit`):

- ``"clip"``: OpenAI CLIP and open_clip ViT state dicts (``visual.conv1.weight``,
  ``visual.class_embedding``, ``visual.transformer.resblocks.{i}.attn.in_proj_weight``, …,
  ``visual.proj``); the text tower's keys are ignored. OpenAI weights use QuickGELU, open_clip's
  LAION-trained ``ViT-B-16`` uses GELU (pass ``activation="gelu"``).
- ``"dino"``: DINO ViT state dicts (``cls_token``, ``pos_embed``, ``patch_embed.proj.weight``,
  ``blocks.{i}.attn.qkv.weight``, …, ``norm.weight``); a ``head.*`` projection head is ignored.

The CLIP text tower (:func:`load_clip_text`, :class:`CLIPTextEncoder`) loads from the same
checkpoint's ``token_embedding.weight``, ``positional_embedding``, ``transformer.resblocks.*``,
``ln_final.*`` and ``text_projection``, with CLIP's BPE merges file for the tokenizer.

Wrappers ``{"state_dict": …}``, ``{"model": …}``, ``{"teacher": …}`` and ``module.`` / ``backbone.``
prefixes are unwrapped. The attention head count is not stored in a state dict: it defaults to
``width // 64`` (true of ViT-S/B/L).

Dense CLIP features use the MaskCLIP path (last block: value projection only, then ``ln_post`` and
``proj``), which keeps patch tokens in the text-aligned space; DINO features are the final
normalised patch tokens.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import ENCODERS
from .base import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, ImageEncoder, TextEncoder
from .tokenizer import CLIPTokenizer

__all__ = ["ViTConfig", "VisionTransformer", "ViTImageEncoder", "load_vit", "clip_image_encoder",
           "dino_image_encoder", "TextTransformer", "load_clip_text", "CLIPTextEncoder"]


# -- the ViT ------------------------------------------------------------------------------------

class _QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


_ACTIVATIONS = {"gelu": nn.GELU, "quick_gelu": _QuickGELU}


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a ViT: ``grid`` patches per side at the training resolution; ``proj_dim`` the width
    of a final projection (CLIP) or None; ``pre_norm`` a LayerNorm before the blocks (CLIP)."""

    patch_size: int
    width: int
    depth: int
    heads: int
    grid: int
    patch_bias: bool
    pre_norm: bool
    proj_dim: int | None
    activation: str
    eps: float


class _Block(nn.Module):
    """Pre-norm transformer block (attention + 4x MLP) shared by the image and text towers."""

    def __init__(self, width: int, heads: int, activation: str, eps: float) -> None:
        super().__init__()
        w = width
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(w, eps=eps), nn.LayerNorm(w, eps=eps)
        self.qkv, self.proj = nn.Linear(w, 3 * w), nn.Linear(w, w)
        self.fc1, self.fc2, self.act = nn.Linear(w, 4 * w), nn.Linear(4 * w, w), _ACTIVATIONS[activation]()

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        """x (B, N, width); ``causal``: token i attends to tokens <= i only (CLIP's text tower)."""
        b, n, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).reshape(b, n, w)
        x = x + self.proj(attn)
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))

    def value_path(self, x: Tensor) -> Tensor:
        """MaskCLIP: the output projection of each token's own value, no attention mixing."""
        w = x.shape[-1]
        return self.proj(self.qkv(self.norm1(x))[..., 2 * w:])


class VisionTransformer(nn.Module):
    """Minimal ViT: patch embedding, class token, learned positions, pre-norm blocks, final norm."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.patch_embed = nn.Conv2d(3, w, cfg.patch_size, stride=cfg.patch_size, bias=cfg.patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(w))
        self.pos_embed = nn.Parameter(torch.zeros(1 + cfg.grid ** 2, w))
        self.norm_pre = nn.LayerNorm(w, eps=cfg.eps) if cfg.pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(_Block(w, cfg.heads, cfg.activation, cfg.eps) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(w, eps=cfg.eps)
        self.proj = nn.Parameter(torch.zeros(w, cfg.proj_dim)) if cfg.proj_dim else None

    @property
    def out_channels(self) -> int:
        return self.cfg.proj_dim or self.cfg.width

    def _positions(self, h: int, w: int) -> Tensor:
        cls, grid = self.pos_embed[:1], self.pos_embed[1:]
        if (h, w) != (self.cfg.grid, self.cfg.grid):
            g = grid.T.reshape(1, -1, self.cfg.grid, self.cfg.grid)
            grid = F.interpolate(g, size=(h, w), mode="bicubic", align_corners=False).reshape(-1, h * w).T
        return torch.cat([cls, grid])

    def dense_features(self, images: Tensor, maskclip: bool) -> Tensor:
        """Normalised images (B, 3, H, W), H and W multiples of the patch size → (B, C, H/p, W/p)."""
        x = self.patch_embed(images)
        b, _, h, w = x.shape
        x = torch.cat([self.cls_token.expand(b, 1, -1), x.flatten(2).transpose(1, 2)], 1) + self._positions(h, w)
        x = self.norm_pre(x)
        last = len(self.blocks) - 1 if maskclip else len(self.blocks)
        for block in self.blocks[:last]:
            x = block(x)
        if maskclip:
            x = self.blocks[-1].value_path(x)
        x = self.norm(x[:, 1:])
        if self.proj is not None:
            x = x @ self.proj
        return x.transpose(1, 2).reshape(b, -1, h, w)


# -- checkpoint loading --------------------------------------------------------------------------

# (checkpoint key pattern, our key); the patterns are full matches.
_CLIP_BLOCK_PARTS = (("ln_1.", "norm1."), ("ln_2.", "norm2."), ("attn.in_proj_", "qkv."), ("attn.out_proj.", "proj."),
                     ("mlp.c_fc.", "fc1."), ("mlp.c_proj.", "fc2."))


def _clip_block_rules(prefix: str) -> list[tuple[str, str]]:
    """CLIP's ``<prefix>transformer.resblocks.{i}.*`` (image or text tower) → ``blocks.{i}.*``."""
    return [(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\." + re.escape(theirs) + r"(weight|bias)",
             r"blocks.\1." + ours + r"\2") for theirs, ours in _CLIP_BLOCK_PARTS]


_RULES = {
    "clip": [
        (r"visual\.conv1\.weight", "patch_embed.weight"),
        (r"visual\.class_embedding", "cls_token"),
        (r"visual\.positional_embedding", "pos_embed"),
        (r"visual\.ln_pre\.(weight|bias)", r"norm_pre.\1"),
        *_clip_block_rules("visual."),
        (r"visual\.ln_post\.(weight|bias)", r"norm.\1"),
        (r"visual\.proj", "proj"),
    ],
    "clip_text": [
        (r"token_embedding\.weight", "token_embedding.weight"),
        (r"positional_embedding", "pos_embed"),
        *_clip_block_rules(""),
        (r"ln_final\.(weight|bias)", r"norm.\1"),
        (r"text_projection", "proj"),
    ],
    "dino": [
        (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.\1"),
        (r"cls_token", "cls_token"),
        (r"pos_embed", "pos_embed"),
        (r"blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)", r"blocks.\1.\2.\3"),
        (r"blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", r"blocks.\1.\2.\3"),
        (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.\2.\3"),
        (r"norm\.(weight|bias)", r"norm.\1"),
    ],
}
_IGNORED = {"clip": r"(?!visual\.).*", "dino": r"head\..*",  # text tower / projection head
            "clip_text": r"visual\..*|logit_scale|input_resolution|context_length|vocab_size"}
_DEFAULTS = {"clip": ("quick_gelu", 1e-5), "dino": ("gelu", 1e-6)}
_WRAPPERS = ("state_dict", "model", "teacher")
_PREFIXES = ("module.", "backbone.")


def _unwrap(obj: dict, path: Path) -> dict[str, Tensor]:
    while not any(isinstance(v, Tensor) for v in obj.values()):
        key = next((k for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
        if key is None:
            raise ValueError(f"{path}: no tensors found; expected a state dict or one under "
                             f"{', '.join(_WRAPPERS)}, got keys {sorted(obj)[:8]}")
        obj = obj[key]
    out = {}
    for k, v in obj.items():
        for prefix in _PREFIXES:
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def _rename(state: dict[str, Tensor], naming: str, path: Path) -> dict[str, Tensor]:
    renamed = {}
    for key, value in state.items():
        for pattern, target in _RULES[naming]:
            if re.fullmatch(pattern, key):
                renamed[re.sub(pattern, target, key)] = value
                break
        else:
            if not re.fullmatch(_IGNORED[naming], key):
                raise ValueError(f"{path}: key {key!r} unknown in {naming!r} naming")
    if naming == "dino":  # (1, 1, D) and (1, L, D) in DINO, (D,) and (L, D) here
        for key in ("cls_token", "pos_embed"):
            if key in renamed:
                renamed[key] = renamed[key].reshape(-1, renamed[key].shape[-1]).squeeze(0)
    return renamed


def _infer_config(state: dict[str, Tensor], naming: str, heads: int | None, activation: str | None,
                  path: Path) -> ViTConfig:
    for key in ("patch_embed.weight", "pos_embed", "norm.weight"):
        if key not in state:
            raise ValueError(f"{path}: no ViT weights in {naming!r} naming (missing {key!r})")
    width, _, patch, _ = state["patch_embed.weight"].shape
    grid = math.isqrt(state["pos_embed"].shape[0] - 1)
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    default_act, eps = _DEFAULTS[naming]
    return ViTConfig(patch_size=patch, width=width, depth=depth, heads=heads or max(width // 64, 1), grid=grid,
                     patch_bias="patch_embed.bias" in state, pre_norm="norm_pre.weight" in state,
                     proj_dim=state["proj"].shape[1] if "proj" in state else None,
                     activation=activation or default_act, eps=eps)


def _read_state(path: Path, naming: str) -> dict[str, Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict state dict, got {type(obj).__name__}")
    return _rename(_unwrap(obj, path), naming, path)


def _load_checked(model: nn.Module, state: dict[str, Tensor], naming: str, path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{path}: {naming!r} checkpoint lacks {len(missing)} keys, e.g. {missing[:3]}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(f"{path}: {key}: expected shape {tuple(expected[key].shape)}, got {tuple(value.shape)}")
    model.load_state_dict(state)
    model.eval()


def load_vit(path: str | Path, naming: str, heads: int | None = None,
             activation: str | None = None) -> VisionTransformer:
    """Build a :class:`VisionTransformer` from a local checkpoint in ``"clip"`` or ``"dino"`` naming.

    Raises ValueError naming the file and key when a key is unknown, missing or mis-shaped.
    """
    path = Path(path)
    if naming not in ("clip", "dino"):
        raise ValueError(f"load_vit({path}): naming expected 'clip' or 'dino', got {naming!r}")
    state = _read_state(path, naming)
    model = VisionTransformer(_infer_config(state, naming, heads, activation, path))
    _load_checked(model, state, naming, path)
    return model


class ViTImageEncoder(ImageEncoder):
    """Frozen ViT as an :class:`ImageEncoder`: normalises with ``mean``/``std``, resizes the image
    so each side is a multiple of the patch size, returns patch features (B, C, H'/p, W'/p)."""

    def __init__(self, vit: VisionTransformer, mean: tuple[float, ...], std: tuple[float, ...], maskclip: bool,
                 patches_per_side: int | None = None) -> None:
        self.vit, self.maskclip = vit.requires_grad_(False), maskclip
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        self.patches_per_side = patches_per_side
        self.out_channels = vit.out_channels

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"ViTImageEncoder: images expected (B, 3, H, W), got {tuple(images.shape)}")
        p = self.vit.cfg.patch_size
        _, _, h, w = images.shape
        if self.patches_per_side:  # the shorter side gets this many patches
            scale = self.patches_per_side / min(h, w)
            h, w = round(h * scale), round(w * scale)
        else:
            h, w = max(h // p, 1), max(w // p, 1)
        x = F.interpolate(images.float(), size=(h * p, w * p), mode="bilinear", align_corners=False)
        return self.vit.dense_features((x - self.mean) / self.std, self.maskclip)


@ENCODERS.register
def clip_image_encoder(path: str | Path, activation: str = "quick_gelu",
                       patches_per_side: int | None = None) -> ViTImageEncoder:
    """CLIP / open_clip ViT dense (MaskCLIP) features in the text-aligned space."""
    return ViTImageEncoder(load_vit(path, "clip", activation=activation), CLIP_MEAN, CLIP_STD, maskclip=True,
                           patches_per_side=patches_per_side)


@ENCODERS.register
def dino_image_encoder(path: str | Path, patches_per_side: int | None = None) -> ViTImageEncoder:
    """DINO ViT final patch tokens."""
    return ViTImageEncoder(load_vit(path, "dino"), IMAGENET_MEAN, IMAGENET_STD, maskclip=False,
                           patches_per_side=patches_per_side)


class TextTransformer(nn.Module):
    """CLIP's text tower: token + learned position embeddings, causal blocks, final norm, and the
    projection of the end-of-text token (the highest id in each row) into the joint space."""

    def __init__(self, vocab: int, context: int, width: int, depth: int, heads: int, proj_dim: int,
                 activation: str = "quick_gelu", eps: float = 1e-5) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.pos_embed = nn.Parameter(torch.zeros(context, width))
        self.blocks = nn.ModuleList(_Block(width, heads, activation, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=eps)
        self.proj = nn.Parameter(torch.zeros(width, proj_dim))

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (Q, L) int64, L <= context → (Q, proj_dim) unnormalised embeddings."""
        x = self.token_embedding(tokens) + self.pos_embed[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x, causal=True)
        x = self.norm(x)
        return x[torch.arange(len(tokens)), tokens.argmax(dim=1)] @ self.proj


def load_clip_text(path: str | Path, heads: int | None = None, activation: str = "quick_gelu") -> TextTransformer:
    """The text tower of a local OpenAI CLIP / open_clip checkpoint (keys ``token_embedding.weight``,
    ``positional_embedding``, ``transformer.resblocks.{i}.…``, ``ln_final.*``, ``text_projection``;
    the ``visual.*`` keys are ignored). Heads default to ``width // 64``."""
    path = Path(path)
    state = _read_state(path, "clip_text")
    for key in ("token_embedding.weight", "pos_embed", "proj"):
        if key not in state:
            raise ValueError(f"{path}: no CLIP text tower (missing {key!r})")
    vocab, width = state["token_embedding.weight"].shape
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    model = TextTransformer(vocab, state["pos_embed"].shape[0], width, depth, heads or max(width // 64, 1),
                            state["proj"].shape[1], activation)
    _load_checked(model, state, "clip_text", path)
    return model


@ENCODERS.register
class CLIPTextEncoder(TextEncoder):
    """CLIP text embeddings from a local checkpoint and CLIP's local BPE merges file (see
    :class:`~pcseg.methods.ovs.tokenizer.CLIPTokenizer`), L2-normalised."""

    def __init__(self, checkpoint: str | Path, merges_path: str | Path, activation: str = "quick_gelu") -> None:
        self.model = load_clip_text(checkpoint, activation=activation).requires_grad_(False)
        self.tokenizer = CLIPTokenizer(merges_path, context_length=self.model.pos_embed.shape[0])
        self.out_channels = self.model.proj.shape[1]

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> Tensor:
        return F.normalize(self.model(self.tokenizer(list(texts))), dim=1)
