"""``pneumoscan demo``: the whole job in a few minutes on 2 cores, on synthetic phantoms or on real films.

Without data it writes phantoms whose lesions are known (``data.synthetic``), trains the baseline CNN on them
(with its threshold chosen on validation and its input checks), screens the test phantoms once, explains them
with Grad-CAM, scores where the heatmaps point against the known lesions (the pointing game), and writes one
``report.html``: metrics with intervals, ROC and confusion plots, training curves, and a heatmap gallery of both
classes that starts with the errors. The phantom model refuses real films by design, and the report says so.
Given a labelled folder of real films (``--data ROOT``), it trains the quick recipe on them instead (a real
DenseNet121 model in minutes) and writes the same report for the real test films.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

from pneumoscan.data.synthetic import read_lesion_boxes, write_synthetic_dataset
from pneumoscan.evaluate.report import read_called, read_predictions
from pneumoscan.explain.checks import pointing_game
from pneumoscan.explain.render import panel_title, save_panel
from pneumoscan.explain.run import explain_batches
from pneumoscan.models.checkpoint import load_model
from pneumoscan.run_folder import RunFolder
from pneumoscan.settings import load_settings
from pneumoscan.train import TrainConfig, train
from pneumoscan.train.config import FullStage
from pneumoscan.train.recipes import QUICK_NOTE, recipe_settings

log = logging.getLogger(__name__)
PHANTOM_NOTE = ("This model was trained on synthetic phantoms only, so it refuses real chest X-rays by design: its "
                "input check has never seen a real film. For a real model, run <code>make demo DATA=ROOT</code> on a "
                "labelled folder of chest X-rays (the quick recipe, a few minutes on 2 cores) or "
                "<code>pneumoscan train --recipe quick --data ROOT</code>.")


@dataclass(frozen=True)
class DemoConfig:
    """The demo's size: the defaults reach a test AUC above 0.95 in a few minutes on 2 cores."""

    out: str = "runs/demo"
    data: str = ""              # a labelled folder of real films (ROOT/{train,test}/<class>/): the quick recipe on
                                # it instead of phantoms
    weights: str = "auto"       # ImageNet weights for the quick recipe: "auto" (torchvision's), or a state-dict file
    n_train: int = 480          # phantoms in train (validation is carved out of them by patient)
    n_test: int = 160
    size: int = 128             # phantom side = the model's input side, so lesion boxes and heatmaps align
    epochs: int = 12
    gallery: int = 48           # heatmap panels in the report: the errors first, then both classes in turn
    seed: int = 0


def run_demo(config: DemoConfig) -> dict:
    """Data, training, evaluation, explanations and ``report.html``; returns the report's numbers."""
    out = Path(config.out)
    run = RunFolder(out / "run")
    data = Path(config.data) if config.data else write_phantoms(config, out / "data")
    train(demo_train_config(config, data, run), resume=run.config.exists())
    lesions = None if config.data else read_lesion_boxes(data)
    summary = {"metrics": json.loads(run.metrics.read_text()), "real_films": bool(config.data),
               **explain_test(run, out / "heatmaps", lesions, gallery_size=config.gallery)}
    write_report(out / "report.html", run, summary)
    return summary


def write_phantoms(config: DemoConfig, data: Path) -> Path:
    if not (data / "lesions.csv").exists():
        log.info("writing %d synthetic phantoms to %s", config.n_train + config.n_test, data)
        write_synthetic_dataset(data, n_train=config.n_train, n_test=config.n_test, size=config.size, seed=config.seed)
    return data


def demo_train_config(config: DemoConfig, data: Path, run: RunFolder) -> TrainConfig:
    """Real films: the quick recipe with the user's activation cache; phantoms: the baseline CNN, small and fast."""
    if config.data:
        return load_settings(TrainConfig, base=recipe_settings("quick"),
                             overrides={"data": str(data), "out": str(run.root), "model": "densenet121",
                                        "weights": config.weights, "seed": config.seed})
    return TrainConfig(data=str(data), out=str(run.root), model="baseline_cnn", image_size=config.size,
                       full=FullStage(epochs=config.epochs, lr=2e-3), patience=config.epochs, val_fraction=0.2,
                       n_boot=200, workers=1, cache_dir=str(Path(config.out) / "cache"), seed=config.seed,
                       shift_images=100)


def explain_test(run: RunFolder, out_dir: Path, lesions: dict | None, *, gallery_size: int) -> dict:
    """Grad-CAM of the test images (the positive class's evidence) and a panel for each gallery image. With
    ``lesions`` (phantoms), every positive test image is explained and the pointing game scores whether the map's
    peak falls on a known lesion; real films explain the gallery's images alone."""
    loaded = load_model(run.root)
    names = loaded.classes.names
    paths, labels, probabilities = read_predictions(run.predictions("test"), names)
    truth = dict(zip(paths, labels))
    called = dict(zip(paths, read_called(run.predictions("test"), names)))  # the screenings' decisions
    gallery = choose_gallery(paths, labels, [called[p] for p in paths], probabilities, loaded.threshold,
                             gallery_size)
    wanted = paths if lesions is not None else gallery
    out_dir.mkdir(parents=True, exist_ok=True)
    cards, hits = {}, []
    for item in explain_batches(loaded, wanted, target=names[1], desc="explaining test"):
        if isinstance(item, tuple):
            continue  # refused or unreadable: listed in metrics_test.json
        hit = pointing_game(item.heatmap, lesions[item.path]) if lesions is not None and truth[item.path] else None
        if hit is not None:
            hits.append(hit)
        if item.path in gallery:
            panel = out_dir / f"{Path(item.path).stem}.png"
            save_panel(panel, item.gray, item.heatmap, empty=item.empty,
                       title=panel_title(item.label, item.probability, threshold=loaded.threshold,
                                         true_label=names[truth[item.path]], explained=names[1]))
            cards[item.path] = {"panel": str(panel.relative_to(out_dir.parent)), "error": called[item.path] !=
                                truth[item.path], "label": names[truth[item.path]], "probability": item.probability,
                                "hit": hit}
    result = {"gallery": [cards[p] for p in gallery if p in cards]}
    if lesions is not None:
        result["lesions"] = {"lesion_phantoms": len(hits), "hits": int(sum(hits)),
                             "hit_rate": sum(hits) / len(hits) if hits else float("nan")}
    return result


def choose_gallery(paths: list[str], labels, called, probabilities, threshold: float, size: int) -> list[str]:
    """``size`` paths: every error first (the most confident first: furthest from the threshold), then the right
    calls of each true class in turn, the most confident first, so that both classes are shown."""
    confidence = {p: abs(prob - threshold) for p, prob in zip(paths, probabilities)}
    right = {p: c == label for p, label, c in zip(paths, labels, called)}
    errors = sorted((p for p in paths if not right[p]), key=lambda p: -confidence[p])
    by_class = [sorted((p for p, label in zip(paths, labels) if label == c and right[p]), key=lambda p: -confidence[p])
                for c in sorted(set(labels))]
    turns = [p for group in zip_longest(*by_class) for p in group if p is not None]
    return (errors + turns)[:size]


def _metric_rows(metrics: dict) -> str:
    rows = []
    for split in ("validation", "test"):
        if split not in metrics:
            continue
        m = metrics[split]["at_threshold"]
        cells = "".join(f"<td>{m[k]:.3f} <small>[{m['ci95'][k][0]:.3f}, {m['ci95'][k][1]:.3f}]</small></td>"
                        for k in ("auc", "accuracy", "sensitivity", "specificity"))
        rows.append(f"<tr><th>{split}</th>{cells}</tr>")
    return "\n".join(rows)


def write_report(path: Path, run: RunFolder, summary: dict) -> Path:
    """One page a person opens: metrics, plots, training curves, the heatmap gallery and, on phantoms, the lesion
    hit rate and why real films are refused."""
    metrics, lesions = summary["metrics"], summary.get("lesions")
    figures = "".join(f'<figure><img src="{html.escape(str(src.relative_to(path.parent)))}" alt="{alt}">'
                      f'<figcaption>{alt}</figcaption></figure>'
                      for src, alt in ((run.plot("roc", "test"), "ROC, test"),
                                       (run.plot("confusion", "test"), "confusion matrix, test"),
                                       (run.curves, "training curves")))
    cards = "".join(
        f'<figure class="{"error" if g["error"] else ""}"><img src="{html.escape(g["panel"])}" alt="heatmap">'
        f'<figcaption>{"ERROR, " if g["error"] else ""}true {html.escape(g["label"])}, p={g["probability"]:.3f}'
        f'{"" if g["hit"] is None else ", on a lesion" if g["hit"] else ", off the lesions"}</figcaption></figure>'
        for g in summary["gallery"])
    counts = metrics.get("test", {}).get("screening")
    what = "test films" if summary["real_films"] else "test phantoms"
    screening = (f"{counts['scored']} of {counts['images']} {what} were scored ({counts['flagged']} flagged, "
                 f"{counts['refused']} refused by the input check)." if counts else "")
    if summary["real_films"]:
        title = "pneumoscan demo: real films, DenseNet121, quick recipe"
        about = f'<p id="about">{html.escape(QUICK_NOTE)}</p>'
        pointing = ""
    else:
        title = "pneumoscan demo: synthetic phantoms, baseline CNN"
        about = f'<p id="about">{PHANTOM_NOTE}</p>'
        pointing = f"""<h2>Where the heatmaps point</h2>
<p id="lesions">Lesion hit rate (pointing game: the Grad-CAM peak within 15 px of a known lesion):
<strong>{lesions['hit_rate']:.3f}</strong> ({lesions['hits']} of {lesions['lesion_phantoms']}
phantoms with a lesion).</p>"""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#1d2330}} table td,table th{{padding:4px 10px}}
figure{{display:inline-block;margin:6px;vertical-align:top}} figure img{{max-width:420px}}
.gallery figure img{{max-width:300px}} figure.error{{outline:3px solid #b3261e}} small{{color:#667}}
#about{{background:#fff4d6;padding:8px 12px;border-left:4px solid #c98a00}}</style></head>
<body><h1>{title}</h1>
{about}
<p>Threshold {metrics['threshold']:.4f} chosen on validation ({metrics['threshold_rule']}); the {what} were
screened once. {screening}</p>
<h2>Metrics (95% bootstrap intervals)</h2>
<table id="metrics"><tr><th></th><th>AUC</th><th>accuracy</th><th>sensitivity</th><th>specificity</th></tr>
{_metric_rows(metrics)}</table>
{pointing}
<h2>Plots</h2>{figures}
<h2>Heatmaps (errors first, outlined; then both classes in turn)</h2><div class="gallery">{cards}</div>
<p><small>Research use only, not a medical device.</small></p>
</body></html>
"""
    path.write_text(page)
    return path
