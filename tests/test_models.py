"""Tests of pneumoscan.models.networks and pneumoscan.models.checkpoint: one contract over every registered model."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from tests.conftest import DENSENET_WEIGHTS, RESNET_WEIGHTS, needs
from torch import nn

from pneumoscan.data import Preprocessing
from pneumoscan.models.checkpoint import LoadedModel, load_model, save_model
from pneumoscan.models.networks import MODELS, ClassifierHead, build_model, count_parameters

SMALL = Preprocessing(image_size=64)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_gives_one_logit_and_a_feature_map(name):
    torch.manual_seed(0)
    model = build_model(name, preprocessing=SMALL).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        fmap = model.feature_map(x)
        assert logits.shape == (3,)
        assert fmap.ndim == 4 and fmap.shape[0] == 3
        assert model.head[3].in_features == fmap.shape[1]
        torch.testing.assert_close(model.head(fmap).squeeze(1), logits)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpoint_round_trip_gives_identical_logits(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, preprocessing=SMALL).eval()
    path = tmp_path / "model.pt"
    save_model(path, model, LoadedModel.of(model, threshold=0.37, threshold_rule="youden").description)
    loaded = load_model(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))
    assert loaded.threshold == 0.37 and loaded.preprocessing == SMALL and loaded.model.arch == name
    torch.load(path, weights_only=True)  # loadable without unpickling arbitrary objects


def test_head_has_the_published_shape():
    head = ClassifierHead(1024)
    kinds = [type(m) for m in head]
    assert kinds == [nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (head[2].p, head[3].out_features, head[5].p, head[6].out_features) == (0.5, 128, 0.3, 1)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match="baseline_cnn.*densenet121.*resnet50"):
        build_model("vgg16")


def test_frozen_trunk_keeps_batchnorm_statistics():
    model = build_model("resnet50", preprocessing=SMALL).freeze_trunk(True)
    model.train()
    assert not model.trunk.training and model.tail.training
    assert not any(p.requires_grad for p in model.trunk.parameters())
    before = model.trunk[1].running_mean.clone()
    model(torch.randn(4, 3, 64, 64))
    assert torch.equal(before, model.trunk[1].running_mean)


def test_partial_weights_are_refused_unless_allowed(tmp_path, caplog):
    state = torchvision.models.resnet50().state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("layer4.2")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="weights are missing.*allow_partial_weights"):
        build_model("resnet50", weights=tmp_path / "partial.pth")
    with caplog.at_level(logging.WARNING):
        model = build_model("resnet50", weights=tmp_path / "partial.pth", allow_partial_weights=True)
    assert "layer4.2.conv1" in caplog.text
    torch.testing.assert_close(model.tail[0][0].conv1.weight, state["layer4.0.conv1.weight"])


def test_wrong_weights_file_is_refused(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="do not belong"):
        build_model("densenet121", weights=tmp_path / "r18.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: not a PyTorch state-dict file"):
        build_model("densenet121", weights=tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError):
        build_model("densenet121", weights=tmp_path / "absent.pth")


def test_not_a_model_file_is_a_clear_error(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a pneumoscan model"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_model(tmp_path)


def test_parameter_counts():
    model = build_model("densenet121")
    assert count_parameters(model) == 6_953_856 + 1024 * 128 + 128 + 129
    model.freeze_trunk(True)
    assert count_parameters(model, trainable_only=True) == count_parameters(model.tail) + count_parameters(model.head)


@pytest.mark.real_data
@needs(DENSENET_WEIGHTS)
def test_local_densenet_weights_load_strictly_into_the_trunk():
    model = build_model("densenet121", weights=DENSENET_WEIGHTS)
    reference = torchvision.models.densenet121()
    reference.load_state_dict(torch.load(DENSENET_WEIGHTS, weights_only=True))
    torch.testing.assert_close(model.trunk[0].weight, reference.features.conv0.weight)
    torch.testing.assert_close(model.tail[1].running_var, reference.features.norm5.running_var)


@pytest.mark.real_data
@needs(RESNET_WEIGHTS)
def test_partial_resnet_weights_need_the_flag():
    with pytest.raises(ValueError, match="allow_partial_weights"):
        build_model("resnet50", weights=RESNET_WEIGHTS)
    build_model("resnet50", weights=RESNET_WEIGHTS, allow_partial_weights=True)


@pytest.mark.parametrize("name, units", [("densenet121", 17), ("resnet50", 3), ("baseline_cnn", 5)])
def test_training_part_of_the_last_block(name, units):
    model = build_model(name, preprocessing=SMALL)
    assert len(model.tail_units()) == units
    model.train_tail_fraction(0.5).train()
    frozen = model.tail_units()[: model.frozen_tail_units]
    assert frozen and all(not p.requires_grad for u in frozen for p in u.parameters())
    assert all(not u.training for u in frozen) and model.tail_units()[-1].training
    with pytest.raises(ValueError, match="fraction"):
        model.train_tail_fraction(0.0)
