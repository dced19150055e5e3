"""Stage 2 of the pipeline: the three classifiers, each split into trunk, tail and head.

Every model is a ``ScreeningNet``: ``trunk`` (frozen in both training stages, so its output can be
computed once per image and cached), ``tail`` (the last block, fine-tuned in stage 2, ending in the
last feature map that Grad-CAM explains) and ``head`` (GAP -> Dropout -> Linear -> ReLU -> Dropout ->
Linear to one logit for a two-class task, one per class for more). ``MODELS`` maps names to
keyword-only builders; ``build_model(..., lungs="crop"|"mask", segmenter=STATE)`` puts the lung segmenter in front of
the trunk (``anatomy.front``), so the network sees only the lung field.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from urllib.error import URLError

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from pneumoscan.anatomy.front import LUNG_OPTIONS, FrontedTrunk, lung_front
from pneumoscan.data.preprocess import Preprocessing

log = logging.getLogger(__name__)


class ClassifierHead(nn.Sequential):
    """GAP -> Dropout(p_in) -> Linear(in, hidden) -> ReLU -> Dropout(p_hidden) -> Linear(hidden, outputs):
    one logit for two classes (the positive class's), one per class for more."""

    def __init__(self, in_features: int, *, hidden: int = 128, dropout_in: float = 0.5,
                 dropout_hidden: float = 0.3, outputs: int = 1):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout_in),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout_hidden),
            nn.Linear(hidden, outputs),
        )

    def hidden_activations(self, pooled: torch.Tensor) -> torch.Tensor:
        """The hidden layer's output (after its ReLU, without dropout) for pooled features ``[B, C]``."""
        linear, relu = self[3], self[4]
        return relu(linear(pooled))


class ScreeningNet(nn.Module):
    """trunk -> tail -> head: the positive class's logit per image (``[B]``) for two classes, else ``[B, K]``."""

    def __init__(self, trunk: nn.Module, tail: nn.Module, head: ClassifierHead, *, arch: str,
                 arch_kwargs: dict, preprocessing: Preprocessing):
        super().__init__()
        self.trunk = trunk
        self.tail = tail
        self.head = head
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs)
        self.preprocessing = preprocessing
        self.trunk_frozen = False
        self.frozen_tail_units = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(self.trunk(x))).squeeze(1)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before pooling (what Grad-CAM explains), ``[B, C, h, w]``."""
        return self.tail(self.trunk(x))

    def on_input(self, maps: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Maps ``[B, K, S, S]`` drawn on what the trunk saw, placed on ``images`` (a lung crop undone)."""
        front = getattr(self.trunk, "front", None)
        return maps if front is None else front.on_input(maps, front.field(images))

    def freeze_trunk(self, frozen: bool = True) -> ScreeningNet:
        """Freeze (or unfreeze) the trunk's parameters; a frozen trunk also keeps its BatchNorm statistics."""
        self.trunk_frozen = frozen
        self.trunk.requires_grad_(not frozen)
        self.trunk.train(self.training and not frozen)
        return self

    def tail_units(self) -> list[nn.Module]:
        """The tail's blocks with weights, in forward order (DenseNet121: 16 dense layers + norm5;
        ResNet50: 3 bottlenecks; baseline: its conv blocks)."""
        units = []
        for child in self.tail.children():
            grandchildren = list(child.children())
            is_stage = len(grandchildren) > 1 and all(list(g.children()) for g in grandchildren)
            units += grandchildren if is_stage else [child]
        return [u for u in units if any(True for _ in u.parameters())]

    def train_tail_fraction(self, fraction: float) -> ScreeningNet:
        """Train only the last ``fraction`` of the tail's blocks; the blocks before stay frozen (and in eval)."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"tail fraction {fraction}: use a value in (0, 1]")
        units = self.tail_units()
        self.frozen_tail_units = len(units) - max(1, round(fraction * len(units)))
        for i, unit in enumerate(units):
            unit.requires_grad_(i >= self.frozen_tail_units)
        return self.train(self.training)

    def train(self, mode: bool = True) -> ScreeningNet:
        super().train(mode)
        self.trunk.train(mode and not self.trunk_frozen)
        for unit in self.tail_units()[:self.frozen_tail_units]:
            unit.train(False)
        return self


class TailAndHead(nn.Module):
    """A model's tail -> head, applied to trunk activations (shares the model's modules)."""

    def __init__(self, model: ScreeningNet):
        super().__init__()
        self.tail, self.head = model.tail, model.head

    def forward(self, trunk_activations: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(trunk_activations)).squeeze(1)


def _make_head(in_features: int, head_hidden: int, dropout_in: float, dropout_hidden: float,
               outputs: int) -> ClassifierHead:
    return ClassifierHead(in_features, hidden=head_hidden, dropout_in=dropout_in, dropout_hidden=dropout_hidden,
                          outputs=outputs)


def densenet121(*, weights: str | Path | WeightsEnum | None = None, allow_partial_weights: bool = False,
                head_hidden: int = 128, dropout_in: float = 0.5, dropout_hidden: float = 0.3,
                preprocessing: Preprocessing | None = None, outputs: int = 1) -> ScreeningNet:
    """DenseNet121: trunk = conv0..transition3, tail = denseblock4 + norm5 + ReLU (1024 x 7 x 7)."""
    backbone = torchvision.models.densenet121()
    load_backbone_weights(backbone, weights, torchvision.models.DenseNet121_Weights, allow_partial_weights)
    parts = list(backbone.features.children())
    trunk = nn.Sequential(*parts[:10])
    tail = nn.Sequential(backbone.features.denseblock4, backbone.features.norm5, nn.ReLU())
    head = _make_head(1024, head_hidden, dropout_in, dropout_hidden, outputs)
    kwargs = dict(head_hidden=head_hidden, dropout_in=dropout_in, dropout_hidden=dropout_hidden, outputs=outputs)
    return ScreeningNet(trunk, tail, head, arch="densenet121", arch_kwargs=kwargs,
                        preprocessing=preprocessing or Preprocessing())


def resnet50(*, weights: str | Path | WeightsEnum | None = None, allow_partial_weights: bool = False,
             head_hidden: int = 128, dropout_in: float = 0.5, dropout_hidden: float = 0.3,
             preprocessing: Preprocessing | None = None, outputs: int = 1) -> ScreeningNet:
    """ResNet50: trunk = conv1..layer3, tail = layer4 (2048 x 7 x 7). L2 comes from AdamW's weight decay."""
    backbone = torchvision.models.resnet50()
    load_backbone_weights(backbone, weights, torchvision.models.ResNet50_Weights, allow_partial_weights)
    trunk = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool,
                          backbone.layer1, backbone.layer2, backbone.layer3)
    tail = nn.Sequential(backbone.layer4)
    head = _make_head(2048, head_hidden, dropout_in, dropout_hidden, outputs)
    kwargs = dict(head_hidden=head_hidden, dropout_in=dropout_in, dropout_hidden=dropout_hidden, outputs=outputs)
    return ScreeningNet(trunk, tail, head, arch="resnet50", arch_kwargs=kwargs,
                        preprocessing=preprocessing or Preprocessing())


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(), nn.MaxPool2d(2))


def baseline_cnn(*, weights: str | Path | None = None, width: int = 16, blocks: int = 5,
                 head_hidden: int = 128, dropout_in: float = 0.5, dropout_hidden: float = 0.3,
                 preprocessing: Preprocessing | None = None, outputs: int = 1) -> ScreeningNet:
    """A small CNN trained from scratch: ``blocks`` x (conv3x3-BN-ReLU-maxpool), doubling ``width``."""
    preprocessing = preprocessing or Preprocessing()
    channels = [preprocessing.channels] + [width * 2 ** i for i in range(blocks)]
    tail = nn.Sequential(*(_conv_block(c_in, c_out) for c_in, c_out in zip(channels, channels[1:])))
    head = _make_head(channels[-1], head_hidden, dropout_in, dropout_hidden, outputs)
    kwargs = dict(width=width, blocks=blocks, head_hidden=head_hidden, dropout_in=dropout_in,
                  dropout_hidden=dropout_hidden, outputs=outputs)
    model = ScreeningNet(nn.Identity(), tail, head, arch="baseline_cnn", arch_kwargs=kwargs,
                         preprocessing=preprocessing)
    if weights is not None:
        model.load_state_dict(_read_state_dict(weights))
    return model


MODELS = {"densenet121": densenet121, "resnet50": resnet50, "baseline_cnn": baseline_cnn}
PRETRAINED = {"densenet121", "resnet50"}  # the models whose trunk starts from ImageNet weights


def build_model(name: str, *, lungs: str = "none", segmenter: dict | None = None, **kwargs) -> ScreeningNet:
    """Build a model by name (see ``MODELS``) with the builder's keyword arguments; ``lungs`` "crop" or "mask" puts
    the lung segmenter whose state is ``segmenter`` (``anatomy.segmenter.segmenter_state``) before the trunk."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {sorted(MODELS)}")
    if lungs not in LUNG_OPTIONS:
        raise ValueError(f"lungs={lungs!r}: choose one of {LUNG_OPTIONS}")
    model = MODELS[name](**kwargs)
    if lungs != "none":
        if segmenter is None:
            raise ValueError(f"lungs={lungs}: a lung segmenter is needed (--set segmenter=RUN, from pneumoscan "
                             f"segment train)")
        preprocessing = model.preprocessing
        front = lung_front(segmenter, lungs, preprocessing.mean[0], preprocessing.std[0])
        model.trunk = FrontedTrunk(front, model.trunk)
        model.arch_kwargs["lungs"] = lungs
    return model


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """How many parameters ``model`` has (or how many of them require gradients)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def load_backbone_weights(backbone: nn.Module, weights, enum_type: type[WeightsEnum],
                          allow_partial: bool) -> None:
    """Load ImageNet weights into a torchvision backbone.

    ``weights`` is None (random init), ``"imagenet"`` or a torchvision enum (downloaded by
    torchvision), or the path of a state-dict file in torchvision's layout (read with
    ``weights_only=True``). A file missing keys is refused unless ``allow_partial``, in which
    case what stayed at random init is logged.
    """
    if weights is None:
        return
    if isinstance(weights, str) and weights.lower() in ("imagenet", "default"):
        weights = enum_type.DEFAULT
    if isinstance(weights, WeightsEnum):
        backbone.load_state_dict(_downloaded(weights))
        log.info("loaded torchvision weights %s", weights)
        return
    state = _read_state_dict(weights)
    result = backbone.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(("fc.", "classifier."))]
    if result.unexpected_keys:
        raise ValueError(f"{weights}: {len(result.unexpected_keys)} keys do not belong to this architecture, "
                         f"e.g. {result.unexpected_keys[:3]}; is it the right weights file?")
    if missing and not allow_partial:
        raise ValueError(f"{weights}: {len(missing)} weights are missing (e.g. {missing[:3]}); pass "
                         f"allow_partial_weights=True (--allow-partial-weights) to leave them at random init")
    if missing:
        log.warning("%s: partial weights; %d tensors stay at random init: %s", weights, len(missing),
                    ", ".join(sorted({_module_of(k) for k in missing})))
    log.info("loaded %d weight tensors from %s", len(state) - len(result.unexpected_keys), weights)


def _downloaded(weights: WeightsEnum) -> dict[str, torch.Tensor]:
    """torchvision's download of ``weights`` (or its cached copy); where neither can be had, a
    ``FileNotFoundError`` that names the file to download elsewhere and the flag that takes it."""
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (URLError, OSError) as err:  # no network, a proxy or a firewall (URLError is an OSError)
        reason = getattr(err, "reason", err)
        raise FileNotFoundError(
            f"could not download torchvision's ImageNet weights {weights.url} ({reason}); download that file where "
            f"the network allows, then pass it with --weights FILE (or weights=FILE), or train with --weights none"
        ) from err


def _module_of(key: str) -> str:
    return key.rsplit(".", 1)[0]


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a PyTorch state-dict file ({err})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return state
