"""Two independently augmented views of the same points of a scene, for consistency training.

:class:`TwoViewDataset` wraps a :class:`~pcseg.data.datasets.SegmentationDataset`: it loads the raw
scene and budget mask, applies the base dataset's transforms once (shared by both views: this is
where point-dropping transforms such as ``CropPoints`` / ``RandomDropout`` belong), then applies
``view_transforms`` twice with independent generators and voxelizes each result. Both views hold
the same N points in the same order, so ``inverse`` and ``view2_inverse`` put their voxels in
point-wise correspondence.

A sample is the base training sample of view 1 (docs/contracts.md) plus, for view 2,
``view2_coords`` (M2, D) int32, ``view2_feats`` (M2, C) float32, ``view2_labels`` (M2,) int64 and
``view2_inverse`` (N,) int64. :func:`collate_two_views` batches them like
:func:`~pcseg.data.collate.collate_sparse` (the view-2 keys batched the same way, batch index
first, ``view2_inverse`` offset into the view-2 voxel rows). The dataset exposes that function as
``collate_fn``, which the training loader uses in place of ``collate_sparse``.

Config (``data.name: TwoViews``)::

    data:
      name: TwoViews
      kwargs: {dataset: ScanNet, root: data/scannet, voxel_size: 0.02,
               view_transforms: [{name: RandomRotateZ}, …, {name: NormalizeColor}]}
      train: {split: train, transforms: []}          # shared by both views
      val: {split: val, transforms: [{name: NormalizeColor}]}

Splits not in ``two_view_splits`` (default: only ``train``) get the plain base dataset.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from pcseg.data.collate import collate_sparse
from pcseg.data.datasets import DatasetWrapper, SegmentationDataset, build_wrapped_base
from pcseg.data.registry import DATASETS
from pcseg.data.transforms import Transform, build_transforms

__all__ = ["VIEW2_KEYS", "TwoViewDataset", "collate_two_views", "TwoViews"]

VIEW2_KEYS: tuple[str, ...] = ("view2_coords", "view2_feats", "view2_labels", "view2_inverse")
_PREFIX = "view2_"


def collate_two_views(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch :class:`TwoViewDataset` samples: :func:`collate_sparse` of view 1 plus the view-2 keys.

    Returns the keys of ``collate_sparse`` and ``view2_coords`` (ΣM2, 1+D) int32 batch first,
    ``view2_feats`` (ΣM2, C), ``view2_labels`` (ΣM2,) int64, ``view2_inverse`` (ΣN,) int64 offset
    into the view-2 voxel rows (point order equal to ``inverse``'s).
    """
    for i, s in enumerate(samples):
        missing = [k for k in VIEW2_KEYS if k not in s]
        if missing:
            raise KeyError(f"collate_two_views: sample {i} ({s.get('name', '?')!r}) lacks {', '.join(missing)}; "
                           f"expected samples of TwoViewDataset")
    batch = collate_sparse(samples)
    second = collate_sparse([{**s, **{key[len(_PREFIX):]: s[key] for key in VIEW2_KEYS}} for s in samples])
    batch.update({key: second[key[len(_PREFIX):]] for key in VIEW2_KEYS})
    return batch


class TwoViewDataset(DatasetWrapper):
    """Two augmented views of each scene of ``base`` (see the module docstring).

    base: the dataset whose scenes, budget, transforms (shared, applied once) and voxelization are used.
    view_transforms: ``t(sample, rng) -> sample`` applied to each view with its own generator; it
        must keep every point (a transform that drops points raises in :meth:`__getitem__`).

    View v (1 or 2) of item i in epoch e is drawn from ``np.random.default_rng([seed, e, i, v])``,
    independent of the shared transforms' ``base.rng(i)``.
    """

    def __init__(self, base: SegmentationDataset, view_transforms: Transform | None) -> None:
        super().__init__(base)
        self.view_transforms = view_transforms

    collate_fn = staticmethod(collate_two_views)  # the training loader's collate function

    def view_rng(self, index: int, view: int) -> np.random.Generator:
        """The generator of view ``view`` (1 or 2) of item ``index`` in the current epoch."""
        return np.random.default_rng([self.base.seed, self.base.epoch, index, view])

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.base.load_scene(index)
        if self.base.transforms is not None:
            scene = self.base.transforms(scene, self.base.rng(index))
        views = []
        for view in (1, 2):
            out = scene if self.view_transforms is None else self.view_transforms(scene, self.view_rng(index, view))
            if len(out["coord"]) != len(scene["coord"]):
                raise ValueError(f"TwoViewDataset: view_transforms changed the number of points of scene "
                                 f"{scene['name']!r} from {len(scene['coord'])} to {len(out['coord'])}; both views "
                                 f"must keep the same points, so put point-dropping transforms in the split's "
                                 f"(shared) transforms")
            views.append(self.base.to_sample(out))
        first, second = views
        return {**first, **{_PREFIX + key: second[key] for key in ("coords", "feats", "labels", "inverse")}}


@DATASETS.register
def TwoViews(dataset: str, split: str, transforms: Sequence[Mapping[str, Any]] = (), budget: str | None = None,
             seed: int = 0, view_transforms: Sequence[Mapping[str, Any]] = (),
             two_view_splits: Sequence[str] = ("train",), **kwargs: Any) -> TwoViewDataset | SegmentationDataset:
    """``DATASETS[dataset]`` (built with ``kwargs`` and the split's arguments), two views per item on
    the splits in ``two_view_splits``, the plain base dataset on the others."""
    spec = {**kwargs, "split": split, "transforms": transforms, "budget": budget, "seed": seed}
    base = build_wrapped_base("TwoViews", dataset, spec, split in two_view_splits, "ScanNet, S3DIS")
    if split not in two_view_splits:
        return base
    return TwoViewDataset(base, build_transforms(view_transforms) if view_transforms else None)
