"""``pneumoscan demo``: the whole job on synthetic phantoms, with no download, in a few minutes on 2 cores.

Writes phantoms whose lesions are known (``data.synthetic``), trains the baseline CNN on them (with
its threshold chosen on validation and its input checks), screens the test phantoms once, explains
every test phantom with Grad-CAM, scores where the heatmaps point against the known lesions (the
pointing game), and writes one ``report.html``: metrics with intervals, ROC and confusion plots,
training curves, a heatmap gallery that starts with the errors, and the lesion hit rate.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pneumoscan.checkpoint import load_model
from pneumoscan.data.labels import CLASSES
from pneumoscan.data.records import scan_kaggle_split
from pneumoscan.data.synthetic import read_lesion_boxes, write_synthetic_dataset
from pneumoscan.explain.checks import pointing_game
from pneumoscan.explain.render import panel_title, save_panel
from pneumoscan.explain.run import explain_batches
from pneumoscan.run_folder import RunFolder
from pneumoscan.train import TrainConfig, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """The demo's size: the defaults reach a test AUC above 0.95 in a few minutes on 2 cores."""

    out: str = "runs/demo"
    n_train: int = 480          # phantoms in train (validation is carved out of them by patient)
    n_test: int = 160
    size: int = 128             # phantom side = the model's input side, so lesion boxes and heatmaps align
    epochs: int = 20
    seed: int = 0


def run_demo(config: DemoConfig) -> dict:
    """Data, training, evaluation, explanations and ``report.html``; returns the report's numbers."""
    out = Path(config.out)
    data = out / "data"
    if not (data / "lesions.csv").exists():
        log.info("writing %d synthetic phantoms to %s", config.n_train + config.n_test, data)
        write_synthetic_dataset(data, n_train=config.n_train, n_test=config.n_test, size=config.size, seed=config.seed)
    run = RunFolder(out / "run")
    train_config = TrainConfig(data=str(data), out=str(run.root), model="baseline_cnn", image_size=config.size,
                               full_epochs=config.epochs, full_lr=2e-3, patience=config.epochs, val_fraction=0.2,
                               n_boot=200, workers=1, cache_dir=str(out / "cache"), seed=config.seed,
                               shift_images=100)
    train(train_config, resume=run.config.exists())
    hits = explain_test(run.root, data, out / "heatmaps")
    summary = {"metrics": json.loads(run.metrics.read_text()), "lesions": hits}
    write_report(out / "report.html", run, summary)
    return summary


def explain_test(run_dir: Path, data: Path, out_dir: Path) -> dict:
    """Grad-CAM of every test phantom (PNEUMONIA evidence), each panel saved, and the pointing game on the
    PNEUMONIA phantoms: does the map's peak fall on a known lesion?"""
    loaded = load_model(run_dir)
    samples = scan_kaggle_split(data, "test")
    boxes = read_lesion_boxes(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    gallery, hits = [], []
    for sample, item in zip(samples, explain_batches(loaded, [s.path for s in samples], target="PNEUMONIA",
                                                     desc="explaining test")):
        if isinstance(item, tuple):
            continue  # refused or unreadable: listed in metrics_test.json
        called = int(item.probability >= loaded.threshold)
        panel = out_dir / f"{Path(item.path).stem}.png"
        save_panel(panel, item.gray, item.heatmap, empty=item.empty,
                   title=panel_title(item.label, item.probability, threshold=loaded.threshold,
                                     true_label=CLASSES[sample.label], explained="PNEUMONIA"))
        hit = pointing_game(item.heatmap, boxes[sample.path]) if sample.label == 1 else None
        if hit is not None:
            hits.append(hit)
        gallery.append({"panel": str(panel.relative_to(out_dir.parent)), "error": called != sample.label,
                        "label": sample.label, "probability": item.probability, "hit": hit})
    gallery.sort(key=lambda g: (not g["error"], -g["probability"]))
    return {"pneumonia_phantoms": len(hits), "hits": int(sum(hits)),
            "hit_rate": sum(hits) / len(hits) if hits else float("nan"), "gallery": gallery}


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
    """One page a person opens: metrics, plots, training curves, the heatmap gallery and the lesion hit rate."""
    metrics, lesions = summary["metrics"], summary["lesions"]
    figures = "".join(f'<figure><img src="{html.escape(str(src.relative_to(path.parent)))}" alt="{alt}">'
                      f'<figcaption>{alt}</figcaption></figure>'
                      for src, alt in ((run.plot("roc", "test"), "ROC, test"),
                                       (run.plot("confusion", "test"), "confusion matrix, test"),
                                       (run.curves, "training curves")))
    cards = "".join(
        f'<figure class="{"error" if g["error"] else ""}"><img src="{html.escape(g["panel"])}" alt="heatmap">'
        f'<figcaption>{"ERROR, " if g["error"] else ""}p={g["probability"]:.3f}'
        f'{"" if g["hit"] is None else ", on a lesion" if g["hit"] else ", off the lesions"}</figcaption></figure>'
        for g in lesions["gallery"][:48])
    counts = metrics.get("test", {}).get("screening")
    screening = (f"{counts['scored']} of {counts['images']} test phantoms were scored ({counts['flagged']} flagged, "
                 f"{counts['refused']} refused by the input check)." if counts else "")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pneumoscan demo report</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#1d2330}} table td,table th{{padding:4px 10px}}
figure{{display:inline-block;margin:6px;vertical-align:top}} figure img{{max-width:420px}}
.gallery figure img{{max-width:300px}} figure.error{{outline:3px solid #b3261e}} small{{color:#667}}</style></head>
<body><h1>pneumoscan demo: synthetic phantoms, baseline CNN</h1>
<p>Threshold {metrics['threshold']:.4f} chosen on validation ({metrics['threshold_rule']}); the test phantoms were
screened once. {screening}</p>
<h2>Metrics (95% bootstrap intervals)</h2>
<table id="metrics"><tr><th></th><th>AUC</th><th>accuracy</th><th>sensitivity</th><th>specificity</th></tr>
{_metric_rows(metrics)}</table>
<h2>Where the heatmaps point</h2>
<p id="lesions">Lesion hit rate (pointing game: the Grad-CAM peak within 15 px of a known lesion):
<strong>{lesions['hit_rate']:.3f}</strong> ({lesions['hits']} of {lesions['pneumonia_phantoms']} PNEUMONIA
phantoms).</p>
<h2>Plots</h2>{figures}
<h2>Heatmaps (errors first, outlined)</h2><div class="gallery">{cards}</div>
<p><small>Research use only. Phantoms are synthetic; see README for real data.</small></p>
</body></html>
"""
    path.write_text(page)
    return path
