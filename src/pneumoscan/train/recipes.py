"""Named training recipes: settings that were validated, so that a user gets the best one by default.

``pneumoscan train`` builds its settings from ``TrainConfig``'s defaults, then a recipe, then
``--config``, flags and ``--set``. With ``--recipe auto`` (the default) each model gets the recipe
that measured best for it on the device at hand (see docs/results.md):

- ``published``: the published recipe as ``TrainConfig``'s defaults (a 128-unit head, dropouts 0.5
  and 0.3) with strong acquisition augmentation; the default for ResNet50 and the baseline CNN.
- ``densenet121-tuned``: what the Optuna study chose on validation for DenseNet121 (a 512-unit head,
  lighter augmentation, threshold on validation plus its shifts); on the Kermany test split 0.977 AUC
  and 0.932 accuracy over five seeds on a CPU, against 0.975 and 0.892 for ``published``.
- ``end-to-end``: every layer trained on augmented images for 12 epochs (a GPU's recipe: 0.987 AUC,
  0.936 accuracy over three seeds on an H100).
- ``densenet121-brain-mri``: ``densenet121-tuned`` with what an Optuna study on 4-class brain MRI
  validation chose (a 256-unit head, lighter dropouts, more weight decay, label smoothing 0.18 for
  more than two classes); over three seeds' validation it classified 2,403 of 2,448 slices right
  against 2,399 for ``densenet121-tuned`` (bench/results/brain_mri_tuned_seeds.json), and for tumour vs
  no tumour 5,661 of 5,712 Training slices out of fold against 5,659 (brain_mri_binary_cv.json).
  Named, not automatic: pass ``--recipe densenet121-brain-mri``.
- ``quick``: a first real model in minutes: the frozen ImageNet trunk's pooled features of the clean
  training images, cached once, and ``densenet121-tuned``'s head trained on them (no augmentation, no
  tail stage), with the input checks and a threshold on clean validation like every run. On the Kermany
  test split it trails the full recipe (bench/results/quickstart.json); pretrained models only.

Class weights always come from the data: ``pos_weight_scale`` multiplies the training split's
n_NORMAL / n_PNEUMONIA, so a recipe carries what tuning found without a constant of one dataset.
"""

from __future__ import annotations

from pneumoscan.data.preprocess import Augmentation

RECIPES: dict[str, dict] = {
    "published": {},
    "densenet121-tuned": {
        "head_hidden": 512, "dropout_in": 0.3392582420826302, "dropout_hidden": 0.20364474139265534,
        "augmentation": {"crop_scale": [0.85, 1.0], "brightness": 0.15, "contrast": 0.15, "gamma": [1.0, 1.0],
                         "blur_sigma": [0.0, 0.0], "resolution": [1.0, 1.0], "noise_std": 0.0},
        "head": {"lr": 0.0013071992668214627, "lr_min": 0.00013071992668214628},
        "tail": {"lr": 0.0004673670549115497, "lr_min": 4.673670549115497e-05},
        "weight_decay": 3.298878009017958e-05,
        # tuning's class weight 0.4602 over the data's 1150 / 3321 of the split it was tuned on
        "pos_weight_scale": 1.3289741593671867,
    },
    "end-to-end": {"stages": ["full"], "full": {"epochs": 12, "lr": 1e-4}, "patience": 12, "shift_report": False},
}
RECIPES["quick"] = {  # the head alone on the clean images' pooled frozen features: minutes, not half an hour
    **{k: RECIPES["densenet121-tuned"][k] for k in ("head_hidden", "dropout_in", "dropout_hidden", "head",
                                                     "weight_decay", "pos_weight_scale")},
    "stages": ["head"], "train_views": 1, "augmentation": Augmentation.none().to_dict(),
    "threshold_on": "val", "shift_report": False,
    # a fifth of the default's resampled copies and half its other examples: the checks took 224 s of a 407 s run
    "input_checks": {"made_per_kind": 40, "exposure_examples": 100, "resampled_examples": 100},
}
_BRAIN_MRI_LR = {"head": 0.0005036131335527795, "tail": 0.00048361180733557887}  # brain_mri_tune.json's best trial
RECIPES["densenet121-brain-mri"] = {  # the study's trials decayed each learning rate to a tenth (tune.trial_config)
    **RECIPES["densenet121-tuned"],
    "head_hidden": 256, "dropout_in": 0.14307295276180854, "dropout_hidden": 0.1282362741751203,
    "weight_decay": 0.006207910528128014, "label_smoothing": 0.17846561845530926,
    **{stage: {"lr": lr, "lr_min": lr / 10} for stage, lr in _BRAIN_MRI_LR.items()},
}
QUICK_NOTE = ("This model comes from the quick recipe (the head alone, on frozen ImageNet features). The full recipe, "
              "pneumoscan train --data ROOT (no --recipe), is better: on the Kermany test split 0.977 AUC and 0.932 "
              "accuracy over five seeds, against the quick recipe's 0.964 and 0.873; it takes about 25 minutes on 2 "
              "CPU cores (docs/results.md).")
BEST = {("densenet121", "cpu"): "densenet121-tuned", ("densenet121", "cuda"): "end-to-end"}


def best_recipe(model: str, device: str) -> str:
    """The recipe that measured best for ``model`` on ``device`` ("cpu" or "cuda")."""
    return BEST.get((model, device), "published")


def chosen_recipe(name: str, model: str, device: str) -> str:
    """``name``, or for ``"auto"`` the recipe that measured best for ``model`` on ``device`` ("cpu" or "cuda")."""
    return best_recipe(model, device) if name == "auto" else name


def recipe_settings(name: str) -> dict:
    """The settings of the named recipe, with its name recorded."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: choose auto or one of {sorted(RECIPES)}")
    return {**RECIPES[name], "recipe": name}
