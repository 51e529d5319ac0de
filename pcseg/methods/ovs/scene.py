"""A 3D-OVS scene: posed views split into fitted and held-out ones, its box, depth range and points.

``data`` of a ``configs/ovs/*.yaml`` names the source and its arguments (``data.kwargs``):

- ``ScanNetFrames``: :func:`~pcseg.data.formats.posed_views.read_scannet_frames` of ``root``
  (``frame_skip``, ``image_size``, ``label_map``); the last ``held_out`` frames are held out.
- ``OVSScene3D``: a 3D-OVS scene folder ``root`` (:func:`~pcseg.data.formats.posed_views.read_3dovs_scene`);
  ``TransformsJson``: the ``transforms.json`` file ``root``. Their annotated views are held out
  (else the last ``held_out``).
- ``SyntheticRoom``: views rendered from a generated room. Library code does not generate data:
  the tools and tests render it (:func:`pcseg.data.synthetic.posed_room.room_views`, arguments
  ``seed``, ``num_points``, ``num_views``, ``held_out``, ``height``, ``width``, ``fov_deg``) and
  pass it to :meth:`OVSScene.from_room`.

``batch_rays`` and ``steps_per_epoch`` in ``data.kwargs`` shape the training batches
(:class:`~pcseg.methods.ovs.method.RayBatches`), not the scene.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from pcseg.data.formats.posed_views import PosedViews, read_3dovs_scene, read_scannet_frames, read_transforms_json
from pcseg.data.projection import generate_rays
from pcseg.utils.errors import InputError

__all__ = ["SCENE_SOURCES", "RAY_KEYS", "OVSScene", "scene_kwargs", "load_scene"]

SCENE_SOURCES = ("SyntheticRoom", "ScanNetFrames", "OVSScene3D", "TransformsJson")
RAY_KEYS = ("batch_rays", "steps_per_epoch")
_DEFAULT_NEAR_FAR = (0.1, 10.0)


@dataclass
class OVSScene:
    """Views split into fitted (``train``) and ``held_out``; ``class_names`` the label ids' names;
    ``aabb`` (2, 3) float32 the field's box; ``near_far`` the sample depth range (m); ``points``
    (N, 3) float32 with ``point_classes`` (N,) int64 indices into ``class_names`` when the source
    has a point cloud."""

    train: PosedViews
    held_out: PosedViews
    class_names: tuple[str, ...]
    aabb: Tensor
    near_far: tuple[float, float]
    points: Tensor | None = None
    point_classes: Tensor | None = None

    @classmethod
    def from_room(cls, train: PosedViews, held_out: PosedViews, points: Tensor, point_classes: Tensor,
                  class_names: tuple[str, ...], padding: float) -> OVSScene:
        """A scene with a point cloud (N, 3): the box is the points' bounds grown by ``padding`` m on
        every side, depths span 0.05 m to the box diagonal."""
        lo, hi = points.min(0).values - padding, points.max(0).values + padding
        return cls(train, held_out, tuple(class_names), torch.stack([lo, hi]), (0.05, float((hi - lo).norm())),
                   points, point_classes)


def _frustum_bounds(views: PosedViews, near: float, far: float) -> Tensor:
    """(2, 3) bounds of the image corners' rays between ``near`` and ``far`` over all views."""
    height, width = views.images.shape[1:3]
    corners = torch.tensor([[0.0, 0.0], [width - 1.0, 0.0], [0.0, height - 1.0], [width - 1.0, height - 1.0]])
    pts = []
    for K, c2w in zip(views.K, views.c2w):
        o, d = generate_rays(K, c2w, corners)
        pts += [o + near * d, o + far * d]
    pts = torch.cat(pts)
    return torch.stack([pts.min(0).values, pts.max(0).values])


def scene_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``data.kwargs`` without the ray-batch keys (:data:`RAY_KEYS`)."""
    return {k: v for k, v in kwargs.items() if k not in RAY_KEYS}


def load_scene(name: str, kwargs: Mapping[str, Any]) -> OVSScene:
    """Read the on-disk scene ``data.name`` / ``data.kwargs`` (see the module docstring).

    Raises InputError for an unknown source, a missing root, an unknown argument or a bad ``held_out``.
    """
    if name not in SCENE_SOURCES:
        raise InputError(f"data.name: expected one of {', '.join(SCENE_SOURCES)}, got {name!r}")
    if name == "SyntheticRoom":
        raise InputError("data.name: SyntheticRoom scenes are rendered by the tools and tests "
                         "(pcseg.data.synthetic.posed_room.room_views → OVSScene.from_room), not read")
    args = scene_kwargs(kwargs)
    accepted = {"ScanNetFrames": {"root", "frame_skip", "image_size", "label_map", "held_out"}}.get(
        name, {"root", "held_out"})
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise InputError(f"data.kwargs.{unknown[0]}: unknown for {name}; accepted: {', '.join(sorted(accepted))}")
    if not args.get("root"):
        raise InputError(f"data.kwargs.root: required for {name}")
    held_out = int(args.get("held_out", 4))
    if name == "ScanNetFrames":
        size = args.get("image_size")
        views = read_scannet_frames(args["root"], int(args.get("frame_skip", 1)), None if size is None else tuple(size),
                                    args.get("label_map") or None)
        if not 0 <= held_out < len(views.names):
            raise InputError(f"data.kwargs.held_out: expected 0 <= held_out < {len(views.names)} (the frames read "
                             f"from {args['root']}), got {held_out}")
        annotated: list[int] = []
    else:
        views = read_3dovs_scene(args["root"]) if name == "OVSScene3D" else read_transforms_json(args["root"])
        annotated = [] if views.labels is None else [i for i in range(len(views.names)) if (views.labels[i] >= 0).any()]
    held = annotated or list(range(len(views.names) - held_out, len(views.names)))
    train = [i for i in range(len(views.names)) if i not in held]
    near, far = views.near_far or _DEFAULT_NEAR_FAR
    return OVSScene(views.subset(train), views.subset(held), views.class_names or (), _frustum_bounds(views, near, far),
                    (near, far))
