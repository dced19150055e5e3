"""``pneumoscan segment``: train the lung segmenter, segment films, export it, attach it to a classifier."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def add_segment(sub) -> None:
    p = sub.add_parser("segment", help="lung segmentation: train the segmenter, segment films, export it",
                       description="A U-Net (MONAI) that finds the lungs on a frontal chest X-ray, trained on human "
                                   "lung masks of children and adults (shared/data/lung_masks).")
    actions = p.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="train on a lung-mask folder; writes a run folder with segmenter.pt")
    train.add_argument("--data", required=True, help="the lung-mask folder (MANIFEST.csv and masks)")
    train.add_argument("--out", default="runs/lungs")
    train.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="other settings (SegmentConfig), e.g. epochs=4 segmenter.image_size=96")
    predict = actions.add_parser("predict", help="segment films: a mask PNG each and lungs.csv")
    predict.add_argument("model", help="a segmenter run folder or segmenter.pt")
    predict.add_argument("inputs", nargs="+", help="image files, folders or CSVs")
    predict.add_argument("--out", required=True, help="folder for <name>_lungs.png and lungs.csv")
    export = actions.add_parser("export", help="write the segmenter as ONNX, checked against PyTorch")
    export.add_argument("model", help="a segmenter run folder or segmenter.pt")
    export.add_argument("--out", required=True, help="folder for lungs.onnx")
    export.add_argument("--parity-films", nargs="*", default=[], help="films to check the export on (default: "
                                                                       "16 made films)")
    attach = actions.add_parser("attach", help="let a chest X-ray classifier draw the lungs: every screening then "
                                               "has its lung mask and heat_in_lungs, and lateral films are refused")
    attach.add_argument("model", help="the classifier's run folder or model.pt (changed in place)")
    attach.add_argument("segmenter", help="a segmenter run folder or segmenter.pt")


def cmd_segment(args) -> int:
    return {"train": _train, "predict": _predict, "export": _export, "attach": _attach}[args.action](args)


def _train(args) -> int:
    from pneumoscan.anatomy.training import SegmentConfig, train_segmenter
    from pneumoscan.settings import load_settings, parse_overrides

    config = load_settings(SegmentConfig, overrides={"data": args.data, "out": args.out, **parse_overrides(args.set)})
    run = train_segmenter(config)
    print(f"lung segmenter written to {run}")
    return 0


def _predict(args) -> int:
    from PIL import Image

    from pneumoscan.anatomy.regions import lung_regions
    from pneumoscan.anatomy.segmenter import load_segmenter
    from pneumoscan.data.io import ImageLoadError, load_image
    from pneumoscan.data.records import expand_inputs

    segmenter = load_segmenter(args.model)
    paths = expand_inputs(args.inputs)
    if not paths:
        raise ValueError(f"no images found in {args.inputs}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, failed = [], 0
    for path in paths:
        try:
            gray = load_image(path)
        except ImageLoadError as err:
            rows.append({"path": path, "status": "unreadable", "reason": err.problem})
            failed += 1
            continue
        mask = segmenter.masks([gray])[0]
        Image.fromarray((mask * 255).astype(np.uint8)).save(out / f"{Path(path).stem}_lungs.png")
        regions = lung_regions(mask)
        rows.append({"path": path, "status": "segmented", "lung_area_fraction": f"{regions.area_fraction:.4f}",
                     "regions": regions.regions, "smaller_region_share": f"{regions.smaller_share:.4f}"})
    columns = ["path", "status", "lung_area_fraction", "regions", "smaller_region_share", "reason"]
    with (out / "lungs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows) - failed} films segmented into {out} (lungs.csv){f'; {failed} unreadable' if failed else ''}")
    return 1 if failed else 0


def _export(args) -> int:
    from pneumoscan.anatomy.export import export_segmenter
    from pneumoscan.anatomy.segmenter import load_segmenter
    from pneumoscan.data.io import load_image
    from pneumoscan.data.synthetic import phantom_films

    segmenter = load_segmenter(args.model)
    films = [load_image(p) for p in args.parity_films] or phantom_films(16)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parity = export_segmenter(segmenter, out / "lungs.onnx", films)
    print(f"exported to {out / 'lungs.onnx'}: on {parity['films']} films the probabilities differ by at most "
          f"{parity['prob_max_abs_diff']:.2e} and {100 * parity['mask_pixels_differing']:.3f}% of mask pixels differ")
    return 0


def _attach(args) -> int:
    from pneumoscan.models.checkpoint import attach_segmenter

    description = attach_segmenter(args.model, args.segmenter)
    check = description["frontal_check"]
    print(f"{args.model} now draws the lungs with {description['segmenter']}"
          + (f"; films without a frontal pair of lungs are refused (check fitted on "
             f"{check['fitted_on'].get('training_films')} training films)" if check else
             "; the segmenter has no frontal check, so lateral films are not refused"))
    return 0


def review_anatomy(cfg, loaded, samples) -> None:
    """``explain --review SPLIT --anatomy``: the review's heatmaps measured against the lungs."""
    from pneumoscan.explain.anatomy import anatomy_review

    if not cfg.masks and loaded.anatomy is None:
        raise ValueError("--anatomy needs lungs: give --masks (human masks laid out like --data) or attach a lung "
                         "segmenter to the model (pneumoscan segment attach MODEL SEGMENTER)")
    summary = anatomy_review(loaded, samples, cfg.out, methods=(cfg.method,), data_root=cfg.data,
                             masks_root=cfg.masks)[cfg.method]
    called = summary[f"called_{loaded.classes.names[1]}"]
    if called["images"]:
        heat, chance = called["heat_in_lungs"], called["chance"]
        print(f"{cfg.method}: on {called['images']} films called {loaded.classes.names[1]}, {heat['mean']:.1%} of the "
              f"heat lies in the lungs (95% CI {heat['ci95'][0]:.1%}-{heat['ci95'][1]:.1%}), which cover "
              f"{chance['mean']:.1%} of the film; see {cfg.out}/anatomy.json")
