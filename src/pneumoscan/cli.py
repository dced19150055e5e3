"""The ``pneumoscan`` command line: parses arguments and calls the pipeline's stages."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("pneumoscan")

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train, threshold and evaluate a model; writes a run folder",
                       description="Train a classifier (two stages on cached activations by default), choose "
                                   "its threshold on a patient-level validation split, evaluate validation "
                                   "and the test split once. Settings: defaults < --config file < flags < --set.")
    p.add_argument("--data", help="dataset root in the Kaggle layout (train/, test/) or a path,label CSV")
    p.add_argument("--model", help="densenet121 (default), resnet50 or baseline_cnn")
    p.add_argument("--weights", help="imagenet (torchvision download), none, or a state-dict file path")
    p.add_argument("--allow-partial-weights", action="store_true", default=None,
                   help="accept a weights file missing some tensors (they stay random; reported)")
    p.add_argument("--out", help="run folder (default runs/train)")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", help="JSON file of settings (see TrainConfig; unknown keys are refused)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set tail_epochs=5 augmentation.hflip=false")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out from its last checkpoint")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained model on a labelled split or CSV",
                       description="Predict a labelled set with a trained model and report every metric at the "
                                   "model's saved threshold and at 0.5, with bootstrap 95%% CIs and plots.")
    p.add_argument("model", help="run folder or model.pt")
    p.add_argument("--data", required=True, help="dataset root (Kaggle layout) or a path,label CSV")
    p.add_argument("--split", default="test", help="split folder to evaluate when --data is a root (default test)")
    p.add_argument("--out", help="output folder (default MODEL_RUN/eval-SPLIT)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="PNEUMONIA probability for images, folders or CSVs",
                       description="Predict one image, a folder (recursively) or a CSV of paths. Broken files "
                                   "are reported and skipped; the exit code is 1 when any file failed.")
    p.add_argument("model", help="run folder or model.pt")
    p.add_argument("inputs", nargs="+", help="image files (JPEG, PNG, DICOM...), folders or CSVs")
    p.add_argument("--out", help="write a CSV (path,probability,label,threshold,error) instead of printing")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="generate a small synthetic dataset, train, evaluate (a few minutes)",
                       description="End-to-end run on synthetic chest-X-ray-like phantoms: writes the data, "
                                   "trains the baseline CNN from scratch, evaluates it and prints the metrics.")
    p.add_argument("--out", default="runs/demo", help="folder for the data and the run (default runs/demo)")
    p.add_argument("--epochs", type=int, default=8)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pneumoscan", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_evaluate, _add_predict, _add_demo):
        add(sub)
    return parser


def cmd_train(args) -> int:
    from pneumoscan.settings import load_settings, parse_overrides
    from pneumoscan.train import TrainConfig, train

    overrides = {k: v for k, v in {"data": args.data, "model": args.model, "weights": args.weights,
                                   "out": args.out, "seed": args.seed,
                                   "allow_partial_weights": args.allow_partial_weights}.items() if v is not None}
    overrides.update(parse_overrides(args.set))
    config = load_settings(TrainConfig, file=args.config, overrides=overrides)
    if not config.data and not config.split:
        raise ValueError("no training data: pass --data ROOT_OR_CSV (or a split in --config)")
    run_dir = train(config, resume=args.resume)
    _print_summary(run_dir)
    return 0


def _print_summary(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"run folder: {run_dir}")
    print(f"threshold {metrics['threshold']:.4f} ({metrics['threshold_rule']}, chosen on validation)")
    for split in ("validation", "test"):
        if split in metrics:
            m = metrics[split]["at_threshold"]
            print(f"{split:>10}: AUC {m['auc']:.4f}  accuracy {m['accuracy']:.4f}  sensitivity "
                  f"{m['sensitivity']:.4f}  specificity {m['specificity']:.4f}  F1 {m['f1']:.4f}")


def cmd_evaluate(args) -> int:
    from pneumoscan.checkpoint import load_model, resolve_model_path
    from pneumoscan.data.records import load_samples
    from pneumoscan.evaluate import evaluate_model

    loaded = load_model(args.model)
    samples = load_samples(args.data, args.split if Path(args.data).is_dir() else None)
    name = args.split if Path(args.data).is_dir() else Path(args.data).stem
    out = Path(args.out) if args.out else resolve_model_path(args.model).parent / f"eval-{name}"
    result = evaluate_model(loaded, samples, out_dir=out, name=name, precision=args.precision)
    m = result["at_threshold"]
    print(f"{name}: AUC {m['auc']:.4f} [{m['ci95']['auc'][0]:.4f}, {m['ci95']['auc'][1]:.4f}]  accuracy "
          f"{m['accuracy']:.4f}  sensitivity {m['sensitivity']:.4f}  specificity {m['specificity']:.4f}  "
          f"at threshold {loaded.threshold:.4f}; written to {out}")
    return 0


def cmd_predict(args) -> int:
    from pneumoscan.checkpoint import load_model
    from pneumoscan.predict import expand_inputs, predict_paths, write_predictions_csv

    loaded = load_model(args.model)
    paths = expand_inputs(args.inputs)
    if not paths:
        raise ValueError(f"no images found in {args.inputs}")
    predictions = predict_paths(loaded.model, paths, threshold=loaded.threshold, batch_size=args.batch_size,
                                precision=args.precision)
    if args.out:
        write_predictions_csv(args.out, predictions)
        print(f"{len(predictions)} predictions written to {args.out}")
    else:
        for p in predictions:
            if p.error:
                print(f"{p.path}\terror: {p.error}")
            else:
                print(f"{p.path}\t{p.label}\tprobability {p.probability:.4f}\tthreshold {p.threshold:.4f}")
    failed = sum(bool(p.error) for p in predictions)
    if failed:
        print(f"{failed} of {len(predictions)} files could not be read", file=sys.stderr)
    return 1 if failed else 0


def cmd_demo(args) -> int:
    from pneumoscan.data.synthetic import write_synthetic_dataset
    from pneumoscan.train import TrainConfig, train

    out = Path(args.out)
    data = out / "data"
    if not (data / "lesions.csv").exists():
        log.info("writing a synthetic dataset to %s", data)
        write_synthetic_dataset(data, n_train=320, n_test=120, seed=0)
    config = TrainConfig(data=str(data), out=str(out / "run"), model="baseline_cnn", full_epochs=args.epochs,
                         full_lr=2e-3, patience=args.epochs, val_fraction=0.2, n_boot=200, workers=1,
                         cache_dir=str(out / "cache"))
    run_dir = train(config, resume=(out / "run" / "config.json").exists())
    _print_summary(run_dir)
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[console])
    from pneumoscan.data.io import ImageLoadError

    try:
        return COMMANDS[args.command](args)
    except (ImageLoadError, *USER_ERRORS) as err:
        print(f"pneumoscan {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pneumoscan {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
