"""How a run fits its input checks (``input_checks``): the examples on both sides of the modality gate
(training images, exposure variants, ``accept`` examples; made non-X-ray images, ``refuse`` examples), the
features the model computes for them, and the population-shift score's Gaussian and classifier."""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression

from pneumoscan.data.io import ImageLoadError, load_image
from pneumoscan.data.records import expand_inputs
from pneumoscan.data.split import evenly_spaced
from pneumoscan.input_checks.checks import (
    FLAG_ABOVE,
    OTHER_POPULATION_RECALL,
    POPULATION_LIMIT,
    RESAMPLINGS,
    InputChecks,
    InputCheckSettings,
    ModalityGate,
    PopulationShift,
    logistic_probability,
    shift_layer_of,
)
from pneumoscan.input_checks.not_xray import made_images

log = logging.getLogger(__name__)


def fit_shift(train_features: np.ndarray, val_features: np.ndarray, *, quantile: float = 0.995,
              components: int | None = None) -> PopulationShift:
    """Fit the Gaussian on ``train_features``; the novelty limit is ``quantile`` of ``val_features``' distances.

    With ``components``, the distance is read in the covariance's ``components`` largest principal directions
    only (the mean squared z-score there), leaving out the faint directions a full Mahalanobis distance weighs
    most; ``None`` (the input checks' choice, see ``bench.qc_novelty``) keeps them all.
    """
    estimate = LedoitWolf().fit(np.asarray(train_features, dtype=np.float64))
    shift = PopulationShift(mean=torch.as_tensor(estimate.location_, dtype=torch.float32),
                            precision=torch.as_tensor(_precision(estimate, components), dtype=torch.float32),
                            threshold=float("inf"), quantile=quantile)
    shift.threshold = float(np.quantile(shift.novelty(val_features), quantile))
    log.info("novelty flag above %.3f (%.1f%% quantile of validation)", shift.threshold, 100 * quantile)
    return shift


def _precision(estimate: LedoitWolf, components: int | None) -> np.ndarray:
    """The precision matrix, or its restriction to the ``components`` largest principal directions, scaled so
    that ``PopulationShift.novelty`` (which divides by the feature count) is their mean squared z-score."""
    features = estimate.covariance_.shape[0]
    if components is None or components >= features:
        return estimate.precision_
    variances, directions = np.linalg.eigh(estimate.covariance_)
    top = directions[:, -components:] / np.sqrt(variances[-components:])
    return (top @ top.T) * (features / components)


def fit_logistic(positive: np.ndarray, negative: np.ndarray, *, c: float, seed: int = 0) -> tuple[torch.Tensor, float]:
    """(weight, bias) of a logistic regression of ``positive`` (1) against ``negative`` (0), classes weighted
    equally, on standardized features; the standardization is folded into the weights."""
    features = np.concatenate([positive, negative]).astype(np.float64)
    target = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    mean, scale = features.mean(0), features.std(0) + 1e-6
    regression = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed)
    regression.fit((features - mean) / scale, target)
    weight = regression.coef_[0] / scale
    return torch.as_tensor(weight, dtype=torch.float32), float(regression.intercept_[0] - (weight * mean).sum())


def fit_gate(positive: np.ndarray, negative: np.ndarray, *, seed: int = 0) -> ModalityGate:
    """Logistic regression of modality (1) against everything else (0) on the last pooled features."""
    weight, bias = fit_logistic(positive, negative, c=0.1, seed=seed)
    return ModalityGate(weight=weight, bias=bias)


@torch.inference_mode()
def model_features(model, grays: list[np.ndarray], *, precision: str = "fp32", device="cpu",
                   batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(the trunk's pooled output, the pooled last feature map = the head's input) for grey images."""
    from pneumoscan.device import autocast_for

    device = torch.device(device)
    model = model.to(device).eval()
    trunk, last = [], []
    for start in range(0, len(grays), batch_size):
        batch = torch.stack([model.preprocessing.to_tensor(g) for g in grays[start:start + batch_size]]).to(device)
        with autocast_for(device, precision):
            activations = model.trunk(batch)
            trunk.append(activations.float().mean(dim=(2, 3)).cpu().numpy())
            last.append(model.tail(activations).float().mean(dim=(2, 3)).cpu().numpy())
    if not last:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(trunk), np.concatenate(last)


def pooled_features(model, grays: list[np.ndarray], **options) -> np.ndarray:
    """The model's pooled last feature map (the head's input, what the gate reads) for grey images."""
    return model_features(model, grays, **options)[1]


def example_images(source: str, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` readable images (evenly spaced) of a folder or path CSV; unreadable ones are skipped."""
    paths = expand_inputs([source])
    if not paths:
        raise ValueError(f"{source}: no images found for the input check")
    images = []
    for i in evenly_spaced(len(paths), limit):
        try:
            images.append(load_image(paths[i]))
        except ImageLoadError as err:
            log.warning("input-check example skipped: %s", err)
    return images


def exposure_variants(grays: list[np.ndarray]) -> list[np.ndarray]:
    """Each image over- and under-exposed (gamma 0.5 and 2) and with its contrast halved: X-rays all the same."""
    variants = []
    for gray in grays:
        variants += [gray ** 0.5, gray ** 2.0, 0.25 + 0.5 * gray]
    return variants


def resampled_copies(model, paths: list[str]) -> list[np.ndarray]:
    """Each image at the model's input size under every shift of ``RESAMPLINGS``, and re-encoded as another
    site's pipeline would (``data.shifts.reencoded``): how a film was resampled and compressed is no
    population."""
    from pneumoscan.data.shifts import apply_shift, reencoded

    grays = [load_image(p) for p in paths]
    images = [model.preprocessing.resize(gray) for gray in grays]
    copies = [apply_shift(image, name, index=i)[0].numpy() for name in RESAMPLINGS for i, image in enumerate(images)]
    return copies + [model.preprocessing.resize(reencoded(gray, index=i))[0].numpy() for i, gray in enumerate(grays)]


def resampled_features(model, paths: list[str], count: int, precision: str, device) -> tuple[np.ndarray, np.ndarray]:
    """(trunk, last) pooled features of ``count`` of ``paths`` (evenly spaced), each under every
    ``RESAMPLINGS`` and re-encoded."""
    chosen = [paths[i] for i in evenly_spaced(len(paths), count)]
    return model_features(model, resampled_copies(model, chosen), precision=precision, device=device)


def fit_input_checks(model, train_features: np.ndarray, val_features: np.ndarray, train_images: list[str],
                     settings: InputCheckSettings, *, shift_features: tuple[np.ndarray, np.ndarray],
                     val_images: list[str] = (), seed: int = 0, precision: str = "fp32",
                     device="cpu") -> tuple[InputChecks, dict]:
    """Fit both checks for a trained model; returns them and a report of what they were fitted on.

    ``train_features``/``val_features`` are the pooled last feature maps of the clean training and
    validation images (the gate's input); ``shift_features`` the same images' features at
    ``shift_layer_of(model)`` (train, validation); ``train_images``/``val_images`` their paths, some of
    which are also given over- and under-exposed or resampled.
    """
    features = lambda grays: pooled_features(model, grays, precision=precision, device=device)  # noqa: E731
    exposure_paths = [train_images[i] for i in evenly_spaced(len(train_images), settings.exposure_examples)]
    positive = [train_features, features(exposure_variants([load_image(p) for p in exposure_paths]))]
    report = {"training_images": len(train_features), "exposure_variants": len(positive[1]), "accept": {},
              "refuse": {}, "made": {}}
    accepted = []  # (shift layer, last) features of each accept source
    for source in settings.accept:
        both = model_features(model, example_images(source, settings.examples_per_source), precision=precision,
                              device=device)
        accepted.append((both[0 if shift_layer_of(model) == "trunk" else 1], both[1]))
        report["accept"][source] = len(both[1])
    negative = []
    for kind, grays in made_images(settings.made_per_kind, seed=seed).items():
        negative.append(features(grays))
        report["made"][kind] = len(grays)
    for source in settings.refuse:
        negative.append(features(example_images(source, settings.examples_per_source)))
        report["refuse"][source] = len(negative[-1])
    positive, negative = np.concatenate(positive + [last for _, last in accepted]), np.concatenate(negative)
    gate = fit_gate(positive, negative, seed=seed)
    report["fit_accepted"] = float((gate.probability(positive) >= gate.threshold).mean())
    report["fit_refused"] = float((gate.probability(negative) < gate.threshold).mean())
    log.info("input check fitted on %d images of the modality and %d others: accepts %.1f%% and refuses %.1f%% "
             "of them", len(positive), len(negative), 100 * report["fit_accepted"],
             100 * report["fit_refused"])
    resampled = {"train": resampled_features(model, train_images, settings.resampled_examples, precision, device),
                 "val": resampled_features(model, list(val_images) if accepted else [],
                                           settings.resampled_examples // 2, precision, device)}
    accepted_last = np.concatenate([last for _, last in accepted]) if accepted else None
    shift = fit_population_shift(model, (train_features, val_features), shift_features, resampled, accepted_last,
                                 settings, seed=seed)
    report.update(resampled_copies=len(resampled["train"][1]), resampled_validation_copies=len(resampled["val"][1]),
                  shift_layer=shift_layer_of(model), other_population_classifier=shift.weight is not None,
                  fit_flagged_validation=float((shift.score(shift_features[1], val_features) > FLAG_ABOVE).mean()))
    if accepted:
        at_layer = np.concatenate([layer for layer, _ in accepted])
        report["fit_flagged_accept"] = float((shift.score(at_layer, accepted_last) > FLAG_ABOVE).mean())
    checks = InputChecks(shift=shift, gate=gate, shift_layer=shift_layer_of(model))
    return checks, report


def fit_population_shift(model, last: tuple[np.ndarray, np.ndarray], shift_features: tuple[np.ndarray, np.ndarray],
                         resampled: dict[str, tuple[np.ndarray, np.ndarray]], accepted: np.ndarray | None,
                         settings: InputCheckSettings, *, seed: int = 0) -> PopulationShift:
    """The novelty Gaussian (training images and their resampled copies) and, with examples of other
    populations (``accepted``: their last pooled features), the other-population classifier.

    ``last`` and ``shift_features`` hold (train, validation) features at the last layer and at the shift
    layer; ``resampled[split]`` the (trunk, last) features of resampled copies of some of each split's images.
    """
    at_shift_layer = 0 if shift_layer_of(model) == "trunk" else 1
    with_copies = lambda clean, copies: np.concatenate([clean, copies]) if len(copies) else clean  # noqa: E731
    train = with_copies(shift_features[0], resampled["train"][at_shift_layer])
    if accepted is None:
        return fit_shift(train, shift_features[1], quantile=settings.flag_quantile)
    val = with_copies(shift_features[1], resampled["val"][at_shift_layer])
    shift = fit_shift(train, val, quantile=settings.novelty_quantile)
    training_population = with_copies(last[0], resampled["train"][1])
    shift.weight, shift.bias = fit_logistic(accepted, training_population, c=settings.population_c, seed=seed)
    held_out = held_out_fold_probabilities(accepted, training_population, c=settings.population_c, seed=seed)
    shift.population_limit = other_population_limit(held_out)
    log.info("other-population classifier fitted on %d examples against %d training images and copies: flags "
             "above %.3f, %.1f%% of the examples' held-out folds", len(accepted), len(training_population),
             shift.population_limit, 100 * (held_out > shift.population_limit).mean())
    return shift


def other_population_limit(held_out: np.ndarray) -> float:
    """The probability that flags ``OTHER_POPULATION_RECALL`` of examples the classifier did not see, never
    under ``POPULATION_LIMIT``."""
    return max(POPULATION_LIMIT, float(np.quantile(held_out, 1 - OTHER_POPULATION_RECALL)))


def held_out_fold_probabilities(positive: np.ndarray, negative: np.ndarray, *, c: float, seed: int = 0,
                                folds: int = 5) -> np.ndarray:
    """Each of ``positive``'s probabilities from a logistic regression fitted without its fold (against all of
    ``negative``): how sure the classifier is of examples of that side it has not seen."""
    order = np.random.default_rng(seed).permutation(len(positive))
    probabilities = np.empty(len(positive))
    for fold in np.array_split(order, min(folds, len(positive))):
        kept = np.setdiff1d(order, fold)
        weight, bias = fit_logistic(positive[kept], negative, c=c, seed=seed)
        probabilities[fold] = logistic_probability(positive[fold], weight, bias)
    return probabilities
