"""3D-OVS: open-vocabulary segmentation by distilling 2D image features into a radiance field.

Posed views (:mod:`pcseg.data.formats.posed_views`, cameras in :mod:`pcseg.data.projection`) →
a scene (:mod:`.scene`) → 2D features from :data:`pcseg.models.ENCODERS` (:mod:`.features`) → a
TensoRF-style field (:mod:`.field`) fitted by volume rendering (:mod:`.render`) through the one
trainer (:mod:`.method`: ray batches + the ``FeatureField`` method, losses in :mod:`.losses`) →
text queries → relevancy → labels for held-out views and 3D points (:mod:`.evaluate`); end to
end: :mod:`.pipeline`. The LSeg-style image encoder is a model (:class:`pcseg.models.encoders.LSeg`)
trained by ``tools/train.py`` with ``configs/ovs/lseg_*.yaml``.
"""
from .evaluate import label_points, labels_from_feature_maps, miou, point_features_from_renders, \
    point_features_from_views, query_ious, render_labels, to_query_labels
from .features import build_text_encoder, encode_views, synthetic_features
from .field import RadianceField
from .losses import relevancy
from .method import FeatureField, RayBatches, fit_field, render_view
from .pipeline import FittedScene, OVSScores, fit_scene, scene_queries, score_scene
from .scene import OVSScene, load_scene

__all__ = ["label_points", "labels_from_feature_maps", "miou", "point_features_from_renders",
           "point_features_from_views", "query_ious",
           "render_labels", "to_query_labels", "build_text_encoder", "encode_views", "synthetic_features",
           "RadianceField", "relevancy", "FeatureField", "RayBatches", "fit_field", "render_view", "FittedScene",
           "OVSScores", "fit_scene", "scene_queries", "score_scene", "OVSScene", "load_scene"]
