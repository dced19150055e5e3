"""The model card of an export: the model's description (``models.description``), the exported files with
their hashes, and their parity with PyTorch, as JSON and Markdown beside the model."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pneumoscan.data.tasks import with_article
from pneumoscan.models.checkpoint import LoadedModel
from pneumoscan.models.description import checks_sentence, class_words


def card_path(model_file: str | Path) -> Path:
    """Where the model card of an exported file lies: beside it, named by the part of its name before the
    first dot (model.onnx, model.torchscript.pt and model.int8.xml all share model.card.json)."""
    model_file = Path(model_file)
    return model_file.parent / (model_file.name.split(".")[0] + ".card.json")


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_card(loaded: LoadedModel, files: list[Path], parity: dict | None) -> dict:
    """What a user or reviewer needs to know before trusting the model, as data: its description, the
    exported files and their parity with PyTorch."""
    d = loaded.description
    return {
        "name": d.name,
        "version": f"{d.arch}-{sha256_of(files[0])[:12]}",
        "task": d.task, "classes": list(d.classes), "display": d.display, "modality": d.modality,
        "population": d.population, "intended_use": d.intended_use,
        "data": {"validation": "held out of train by patient or duplicate group", **d.training},
        "preprocessing": d.preprocessing,
        "threshold": {"value": d.threshold, "rule": d.threshold_rule, "chosen_on": d.threshold_on or "validation",
                      "ci95_over_validation_patients": d.threshold_ci95},
        "test_metrics": d.metrics.get("test"),
        "validation_metrics": d.metrics.get("validation"),
        "validation_under_acquisition_shifts": d.metrics.get("validation_under_acquisition_shifts"),
        "input_checks": d.input_checks,
        "anatomy": d.anatomy,
        "limitations": list(d.limitations),
        "description": d.to_dict(),
        "onnx_parity": parity,
        "files": {p.name: {"sha256": sha256_of(p), "bytes": p.stat().st_size} for p in files},
    }


def card_markdown(card: dict) -> str:
    """The model card as Markdown."""
    classes = class_words(card["classes"], card["display"])
    lines = [f"# {card['name']} ({card['version']})", "", f"Classes: {classes}. Modality: "
             f"{card['modality']}. Validated on {card['population']}.", "", "## Intended use", card["intended_use"], "",
             "## Data", *[f"- {k}: {v}" for k, v in card["data"].items()], "",
             "## Preprocessing", *[f"- {k}: {v}" for k, v in card["preprocessing"].items()], "",
             "## Decision threshold",
             f"{card['threshold']['value']:.4f}, chosen by rule `{card['threshold']['rule']}` on "
             f"{card['threshold']['chosen_on']} (never on test).", *_threshold_interval_lines(card['threshold']), ""]
    for title, key in (("Test metrics", "test_metrics"), ("Validation metrics", "validation_metrics")):
        if card.get(key):
            lines += [f"## {title} (95% bootstrap CI)", "| metric | value | 95% CI |", "|---|---|---|"]
            lines += [f"| {k} | {v['value']:.4f} | {_interval(v['ci95'])} |" for k, v in card[key].items()
                      if isinstance(v, dict)]
            lines.append("")
    if card.get("validation_under_acquisition_shifts"):
        lines += ["## Validation under synthetic acquisition shifts",
                  *[f"- {k}: {v:.4f}" for k, v in card["validation_under_acquisition_shifts"].items()], ""]
    if card.get("input_checks"):
        lines += ["## Input checks", *_input_check_lines(card["input_checks"], card["modality"], card["population"]),
                  checks_sentence(card["input_checks"]).capitalize() + ".", ""]
    if card.get("anatomy"):
        lines += ["## Lungs", *_anatomy_lines(card["anatomy"]), ""]
    lines += ["## Limitations", *[f"- {item}" for item in card["limitations"]], ""]
    if card.get("onnx_parity"):
        lines += ["## ONNX parity with PyTorch", *[f"- {k}: {v}" for k, v in card["onnx_parity"].items()], ""]
    lines += ["## Files", *[f"- `{name}`: sha256 `{v['sha256']}` ({v['bytes']:,} bytes)"
                            for name, v in card["files"].items()]]
    return "\n".join(lines) + "\n"


def _anatomy_lines(anatomy: dict) -> list[str]:
    """What the card says about the lung segmenter the model draws the lungs with."""
    lines = [f"Every screening draws the lungs with {anatomy['segmenter']} and reports the share of the heatmap "
             f"inside them (heat_in_lungs) and their share of the film (lung_area_fraction).",
             *[f"- segmenter test Dice, {name}: {dice:.4f}" for name, dice in anatomy.get("test_dice", {}).items()
               if dice is not None]]
    check = anatomy.get("frontal_check")
    if check:
        lines.append(f"- films without a frontal pair of lungs are refused: the smaller lung region must hold at "
                     f"least {check['smaller_share_limit']:.0%} of the lung area, and the lung fields must be like "
                     f"those of the {check['fitted_on'].get('training_films')} frontal training films (limit: the "
                     f"most unusual of {check['fitted_on'].get('validation_films')} validation films)")
    return lines


def _interval(ci95) -> str:
    return f"[{ci95[0]:.4f}, {ci95[1]:.4f}]" if ci95 else ""


def _input_check_lines(limits: dict, modality: str, population: str) -> list[str]:
    refuse = (f"Images that are not {with_article(modality)} (the modality gate's probability under "
              f"{limits['gate_threshold']:.2f}), blank images and colour images are refused, not scored."
              if limits.get("gate_threshold") is not None else "Blank and colour images are refused.")
    classifier = (" or that a classifier fitted on examples of other populations puts there (probability over "
                  f"{limits['population_limit']:.2f})" if limits.get("other_population_classifier") else "")
    return [refuse, f"Images far from the training images' features (novelty over {limits['novelty_threshold']:.3f}, "
            f"the {100 * limits['novelty_quantile']:.1f}% quantile of validation images){classifier} are scored and "
            f"flagged: they are unlike {population}."]


def _threshold_interval_lines(threshold: dict) -> list[str]:
    interval = threshold.get("ci95_over_validation_patients")
    if not interval:
        return []
    return [f"Its bootstrap 95% interval over validation patients is [{interval[0]:.4f}, {interval[1]:.4f}]: "
            "another draw of validation patients could have put it anywhere in there, so check it on local data "
            "before use."]
