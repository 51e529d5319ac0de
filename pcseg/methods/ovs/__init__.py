"""3D-OVS: open-vocabulary segmentation by distilling 2D image features into a radiance field.

Posed images → a TensoRF-style field (:mod:`.field`) fitted by volume rendering (:mod:`.render`,
:mod:`.rays`, :mod:`.fit`) with a feature branch distilled from multi-scale 2D patch features and a
DINO-correlation loss (:mod:`.losses`); text queries (:mod:`.encoders`) → relevancy → labels for
pixels of any view and for 3D points. :mod:`.lseg`: an offline LSeg-style image encoder trained on
synthetic rooms into a sentence-embedding text space (free-text queries without CLIP). Data: :mod:`.multiview`; end-to-end steps: :mod:`.pipeline`.

Fitting is its own loop over rays (not segmentation-network training), so nothing here is a
registered training method.
"""
from .encoders import ImageEncoder, TextEncoder, load_vit
from .field import RadianceField
from .fit import FitConfig, fit_field, render_view
from .losses import relevancy
from .lseg import LSegImageEncoder, LSegSettings, load_or_train_lseg, train_lseg
from .multiview import PosedViews, read_3dovs_scene, read_scannet_frames, read_transforms_json, splat_views
from .rays import generate_rays, look_at, project

__all__ = ["ImageEncoder", "TextEncoder", "load_vit", "RadianceField", "FitConfig", "fit_field", "render_view",
           "relevancy", "LSegImageEncoder", "LSegSettings", "train_lseg", "load_or_train_lseg", "PosedViews",
           "read_3dovs_scene", "read_transforms_json", "read_scannet_frames", "splat_views", "generate_rays", "look_at",
           "project"]
