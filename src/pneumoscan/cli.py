"""The ``pneumoscan`` command line: parses arguments and calls the pipeline's stages."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("pneumoscan")

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train, threshold and evaluate a model; writes a run folder",
                       description="Train a classifier (two stages on cached activations by default), choose "
                                   "its threshold on a patient-level validation split, evaluate validation "
                                   "and the test split once. Settings: defaults < --config file < flags < --set.")
    p.add_argument("--data", help="dataset root in the Kaggle layout (train/, test/) or a path,label CSV")
    p.add_argument("--model", help="densenet121 (default), resnet50 or baseline_cnn")
    p.add_argument("--recipe", default="auto",
                   help="named settings (train.recipes): auto = the best validated one for the model and device "
                        "(densenet121-tuned on a CPU, end-to-end on CUDA for DenseNet121; published otherwise), "
                        "published, densenet121-tuned or end-to-end")
    p.add_argument("--weights", help="imagenet (torchvision download), none, or a state-dict file path")
    p.add_argument("--allow-partial-weights", action="store_true", default=None,
                   help="accept a weights file missing some tensors (they stay random; reported)")
    p.add_argument("--out", help="run folder (default runs/train)")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", help="JSON file of settings (see TrainConfig; unknown keys are refused)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set tail_epochs=5 augmentation.hflip=false")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out from its last checkpoint")
    p.add_argument("--print-settings", action="store_true",
                   help="print every setting the run would use (defaults resolved), as JSON, and exit")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained model on a labelled split or CSV",
                       description="Predict a labelled set with a trained model and report every metric at the "
                                   "model's saved threshold and at 0.5, with bootstrap 95%% CIs and plots.")
    p.add_argument("model", help="run folder or model.pt")
    p.add_argument("--data", required=True, help="dataset root (Kaggle layout) or a path,label CSV")
    p.add_argument("--split", default="test", help="split folder to evaluate when --data is a root (default test)")
    p.add_argument("--out", help="output folder (default MODEL_RUN/eval-SPLIT)")
    _add_runtime_options(p)


def _add_runtime_options(p) -> None:
    p.add_argument("--runtime", default="auto", choices=["auto", "pytorch", "onnxruntime", "openvino"],
                   help="auto: onnxruntime for .onnx, OpenVINO for .xml, PyTorch for a run folder or model.pt")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="PyTorch and OpenVINO precision (bf16 where the CPU computes it natively)")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="screen images, folders or CSVs: probabilities, refusals and flags",
                       description="Screen one image, a folder (recursively) or a CSV with a path column. Each file is "
                                   "scored (and flagged when unlike the training population), refused (not a chest "
                                   "X-ray, blank or colour) or unreadable; the exit code is 1 when any file could "
                                   "not be read.")
    p.add_argument("model", help="run folder, model.pt, exported model.onnx or OpenVINO .xml")
    p.add_argument("inputs", nargs="+", help="image files (JPEG, PNG, DICOM...), folders or CSVs")
    p.add_argument("--out", help="write a CSV (path,status,label,probability,...,flagged,reason,warning) "
                                 "instead of printing")
    p.add_argument("--batch-size", type=int, default=16)
    _add_runtime_options(p)


def _add_checks(sub) -> None:
    p = sub.add_parser("checks", help="fit a trained run's input checks again, with examples to accept or refuse",
                       description="Refit the two input checks of a finished run and save them into its model.pt: "
                                   "the modality gate (what is refused as not a chest X-ray) learns from the run's "
                                   "training images, made non-X-ray images and the examples given here; the "
                                   "population-shift flag from the training and validation images.")
    p.add_argument("model", help="run folder")
    p.add_argument("--accept", nargs="*", default=[], metavar="FOLDER_OR_CSV",
                   help="more images of the modality (other hospitals, adults, devices): never refused")
    p.add_argument("--refuse", nargs="*", default=[], metavar="FOLDER_OR_CSV",
                   help="images of other modalities or body parts: refused")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="other input-check settings, e.g. population='adult chest X-rays from one hospital'")


def _add_explain(sub) -> None:
    from pneumoscan.explain import METHODS, TARGETS

    p = sub.add_parser("explain", help="heatmaps: for images, a split's misclassification review, or two models",
                       description="Explain predictions with a heatmap (Grad-CAM by default). Give images, folders "
                                   "or CSVs; or --review SPLIT --data ROOT for galleries of confident hits and every "
                                   "error; or --compare OTHER_MODEL for side-by-side maps with their agreement.")
    p.add_argument("inputs", nargs="*", help="image files, folders or CSVs")
    p.add_argument("--model", required=True, help="run folder or model.pt")
    p.add_argument("--method", default="gradcam", choices=METHODS)
    p.add_argument("--target", default="pneumonia", choices=TARGETS,
                   help="evidence for PNEUMONIA (default), for NORMAL, or for the predicted class")
    p.add_argument("--out", required=True, help="output folder (panels, CSV, index.html)")
    p.add_argument("--save-arrays", action="store_true", help="also save each heatmap as a .npy array in [0, 1]")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--review", metavar="SPLIT", help="misclassification review of this split of --data")
    p.add_argument("--data", help="dataset root (Kaggle layout) or label CSV, for --review")
    p.add_argument("--confident", type=int, default=8, help="how many confident hits per class to show")
    p.add_argument("--compare", metavar="OTHER_MODEL", help="a second run folder or model.pt to compare with")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a trained model (ONNX or TorchScript) with its model card",
                       description="Export a model whose graph returns the PNEUMONIA probability, the Grad-CAM "
                                   "heatmap and the out-of-distribution score; checks ONNX against PyTorch on "
                                   "--parity-images images and writes a model card (Markdown + JSON).")
    p.add_argument("model", help="run folder or model.pt")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data", help="dataset root or label CSV for the parity check (default: the run's validation "
                                  "split)")
    p.add_argument("--split", default="test", help="split of --data for the parity check (default test)")
    p.add_argument("--parity-images", type=int, default=64)
    p.add_argument("--openvino-int8", type=int, default=0, metavar="N",
                   help="also write model.int8.xml: OpenVINO int8 (convolutions, NNCF) calibrated on N training "
                        "images of the run's split (300 is a good N); serve it with pneumoscan serve")


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="web API and page for a model (FastAPI + uvicorn)",
                       description="Serve POST /v1/predict, GET /healthz, GET /v1/model, the OpenAPI docs at "
                                   "/docs and an upload page at /. Give an exported .onnx (onnxruntime, or OpenVINO "
                                   "with --runtime openvino) or a run folder (PyTorch).")
    p.add_argument("model", help="model.onnx, a run folder or model.pt")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=int, default=20)
    _add_runtime_options(p)


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="train several models under one protocol; error bars and paired tests",
                       description="Train the named models with identical settings, evaluate them on the same test "
                                   "images, and write comparison.md/.json and one ROC plot: metrics with bootstrap "
                                   "CIs (mean +- std over --seeds), DeLong and McNemar tests per pair, parameters, "
                                   "training time and CPU inference time.")
    p.add_argument("--data", required=True, help="dataset root with train/ and test/")
    p.add_argument("--out", default="runs/compare")
    p.add_argument("--models", nargs="+", default=["densenet121", "resnet50", "baseline_cnn"])
    p.add_argument("--seeds", type=int, default=1, help="repeats per model, reported as mean +- std")
    p.add_argument("--weights", nargs="*", default=[], metavar="MODEL=PATH",
                   help="local ImageNet weights per model (default: torchvision's download)")
    p.add_argument("--config", help="train settings (JSON) applied to every model")
    p.add_argument("--ablation", action="store_true",
                   help="also train DenseNet121 end to end from ImageNet and from random init "
                        "(224 px, 12 epochs with a GPU; 112 px, 6 epochs on a CPU)")
    p.add_argument("--records", default="", metavar="DIR",
                   help="keep a small record of each finished run here (settings, test metrics and predictions); "
                        "runs with a record are not retrained, so a comparison can span sessions and machines")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="compare settings, e.g. ablation_epochs=4")


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="Optuna hyperparameter search on validation ROC-AUC",
                       description="TPE search with median pruning over learning rates, head size, dropouts, weight "
                                   "decay, how much of the last block trains, augmentation strength and the class "
                                   "weight. The study is stored in SQLite (resumable) or any Optuna storage URL, "
                                   "which lets several processes or machines share it. Writes best_config.json "
                                   "(for train --config), trials.csv and plots.")
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="runs/tune")
    p.add_argument("--model", default="densenet121")
    p.add_argument("--weights", help="imagenet, none, or a state-dict path")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--timeout-minutes", type=float, default=0.0)
    p.add_argument("--storage", default="", help="Optuna storage URL (default sqlite:///OUT/study.db)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes sharing the study")
    p.add_argument("--config", help="train settings (JSON) every trial starts from")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="tune settings, e.g. tail_epochs=3")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole job on synthetic phantoms: train, evaluate, explain, report.html",
                       description="End-to-end run on synthetic chest-X-ray-like phantoms with known lesions: writes "
                                   "the data, trains the baseline CNN from scratch, screens the test phantoms, "
                                   "explains them with Grad-CAM, scores the heatmaps against the lesions and writes "
                                   "report.html. A few minutes on 2 cores, no download.")
    p.add_argument("--out", default="runs/demo", help="folder for the data, the run and the report (default runs/demo)")
    p.add_argument("--epochs", type=int, default=20)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pneumoscan", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_evaluate, _add_predict, _add_checks, _add_explain, _add_export, _add_serve,
                _add_compare, _add_tune, _add_demo):
        add(sub)
    return parser


def cmd_train(args) -> int:
    from pneumoscan.settings import load_settings, parse_overrides
    from pneumoscan.train import TrainConfig, train
    from pneumoscan.train.recipes import recipe_settings

    overrides = {k: v for k, v in {"data": args.data, "model": args.model, "weights": args.weights,
                                   "out": args.out, "seed": args.seed,
                                   "allow_partial_weights": args.allow_partial_weights}.items() if v is not None}
    overrides.update(parse_overrides(args.set))
    recipe = args.recipe
    if recipe == "auto":
        from pneumoscan.device import pick_device
        from pneumoscan.train.recipes import best_recipe

        probe = load_settings(TrainConfig, file=args.config, overrides=overrides)
        recipe = best_recipe(probe.model, pick_device(probe.device).type)
    config = load_settings(TrainConfig, base=recipe_settings(recipe), file=args.config, overrides=overrides)
    if args.print_settings:
        from pneumoscan.settings import to_dict

        print(json.dumps(to_dict(config.resolved()), indent=2))
        return 0
    if not config.data and not config.split:
        raise ValueError("no training data: pass --data ROOT_OR_CSV (or a split in --config)")
    run_dir = train(config, resume=args.resume)
    _print_summary(run_dir)
    return 0


def _print_summary(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"run folder: {run_dir}")
    interval = metrics.get("threshold_ci95")
    spread = f"; 95% interval over validation patients {interval[0]:.4f} to {interval[1]:.4f}" if interval else ""
    print(f"threshold {metrics['threshold']:.4f} ({metrics['threshold_rule']}, chosen on validation{spread})")
    for split in ("validation", "test"):
        if split in metrics:
            m = metrics[split]["at_threshold"]
            print(f"{split:>10}: AUC {m['auc']:.4f}  accuracy {m['accuracy']:.4f}  sensitivity "
                  f"{m['sensitivity']:.4f}  specificity {m['specificity']:.4f}  F1 {m['f1']:.4f}")


def cmd_evaluate(args) -> int:
    from pneumoscan.checkpoint import resolve_model_path
    from pneumoscan.data.records import load_samples
    from pneumoscan.evaluate import evaluate_screened
    from pneumoscan.screen import load

    screener = load(args.model, runtime=args.runtime, precision=args.precision)
    samples = load_samples(args.data, args.split if Path(args.data).is_dir() else None)
    name = args.split if Path(args.data).is_dir() else Path(args.data).stem
    model = Path(args.model)
    out = Path(args.out) if args.out else (resolve_model_path(model).parent if model.suffix in ("", ".pt")
                                           else model.parent) / f"eval-{name}"
    result = evaluate_screened(screener, samples, out_dir=out, name=name)
    m, counts = result["at_threshold"], result["screening"]
    print(f"{name}: AUC {m['auc']:.4f} [{m['ci95']['auc'][0]:.4f}, {m['ci95']['auc'][1]:.4f}]  accuracy "
          f"{m['accuracy']:.4f}  sensitivity {m['sensitivity']:.4f}  specificity {m['specificity']:.4f}  "
          f"at threshold {screener.threshold:.4f}, over the {counts['scored']} of {counts['images']} images scored "
          f"({counts['flagged']} flagged, {counts['refused']} refused, {counts['unreadable']} unreadable); "
          f"written to {out}")
    return 0


def cmd_predict(args) -> int:
    from pneumoscan.data.records import expand_inputs
    from pneumoscan.evaluate.report import screening_counts
    from pneumoscan.predict import write_screenings_csv
    from pneumoscan.screen import load

    screener = load(args.model, runtime=args.runtime, precision=args.precision)
    paths = expand_inputs(args.inputs)
    if not paths:
        raise ValueError(f"no images found in {args.inputs}")
    results = screener.screen(paths, batch_size=args.batch_size)
    if args.out:
        write_screenings_csv(args.out, results, screener.classes)
        print(f"{len(results)} screenings written to {args.out}")
    else:
        for r in results:
            print(f"{r.source}\t{_describe(r)}")
    counts = screening_counts(results)
    print(f"{counts['scored']} scored ({counts['flagged']} flagged as unlike the training population), "
          f"{counts['refused']} refused, {counts['unreadable']} unreadable", file=sys.stderr)
    return 1 if counts["unreadable"] else 0


def _describe(result) -> str:
    if not result.scored:
        return f"{result.status}: {result.reason}"
    text = f"{result.label}\tprobability {result.probability:.4f}"
    text += f"\tthreshold {result.threshold:.4f}" if result.threshold is not None else ""
    return text + (f"\tFLAGGED: {result.warning}" if result.flagged else "")


def cmd_checks(args) -> int:
    from pneumoscan.input_checks import InputCheckSettings
    from pneumoscan.settings import from_dict, parse_overrides
    from pneumoscan.train.run import refit_input_checks, run_config

    base = run_config(args.model).input_checks
    values = {**base.to_dict(), **parse_overrides(args.set), "accept": args.accept, "refuse": args.refuse}
    report = refit_input_checks(args.model, from_dict(InputCheckSettings, values))
    fitted = report["fitted_on"]
    print(f"input checks of {args.model} fitted again: accepts {100 * fitted['fit_accepted']:.1f}% of the modality's "
          f"examples, refuses {100 * fitted['fit_refused']:.1f}% of the others; report in "
          f"{Path(args.model) / 'input_checks.json'}")
    return 0


def cmd_explain(args) -> int:
    from pneumoscan.checkpoint import load_model
    from pneumoscan.data.records import expand_inputs
    from pneumoscan.explain import run as explain_run

    loaded = load_model(args.model)
    if args.review:
        from pneumoscan.data.records import load_samples
        from pneumoscan.screen import load

        if not args.data:
            raise ValueError("--review needs --data (the dataset root or label CSV)")
        samples = load_samples(args.data, args.review if Path(args.data).is_dir() else None)
        results = load(args.model).screen([s.path for s in samples], desc=f"screening {args.review}")
        keep = [i for i, r in enumerate(results) if r.scored]
        counts = explain_run.review_gallery(loaded, [samples[i] for i in keep],
                                            np.array([results[i].probability for i in keep]), args.out,
                                            method=args.method, confident=args.confident)
        print(f"review of {len(keep)} images written to {args.out}/index.html: " +
              ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
        return 0
    paths = expand_inputs(args.inputs)
    if not paths:
        raise ValueError("nothing to explain: give images, folders or CSVs (or --review SPLIT --data ROOT)")
    if args.compare:
        summary = explain_run.compare_models(loaded, load_model(args.compare), paths, args.out, method=args.method,
                                             names=(Path(args.model).name, Path(args.compare).name))
        print(f"{summary['images']} images compared: mean Spearman {summary['mean_spearman']:.3f}, mean top-20% "
              f"IoU {summary['mean_top_iou']:.3f}; see {args.out}/index.html")
        return 0
    rows = explain_run.explain_files(loaded, paths, args.out, method=args.method, target=args.target,
                                     save_arrays=args.save_arrays, batch_size=args.batch_size)
    failed = sum(bool(r["error"]) for r in rows)
    unreadable = f"; {failed} files unreadable" if failed else ""
    print(f"{len(rows) - failed} explanations written to {args.out}{unreadable}")
    return 1 if failed else 0


def _calibration_images(model: str, count: int):
    """``count`` training images of the run's split (evenly spaced), as network inputs for int8 calibration."""
    from pneumoscan.checkpoint import load_model, resolve_model_path
    from pneumoscan.data import evenly_spaced, read_split, stack_inputs

    split_file = resolve_model_path(model).parent / "split.csv"
    if not split_file.exists():
        raise FileNotFoundError(f"{split_file}: int8 calibration needs the run's split (its training images)")
    train = read_split(split_file)["train"]
    chosen = [train[i] for i in evenly_spaced(len(train), count)]
    return stack_inputs(chosen, load_model(model).preprocessing).numpy()


def _parity_paths(args, count: int) -> list[str]:
    """The images export screens with both PyTorch and the exported file: ``--data``, else the run's validation."""
    from pneumoscan.checkpoint import resolve_model_path
    from pneumoscan.data import evenly_spaced, load_samples, read_split

    if args.data:
        samples = load_samples(args.data, args.split if Path(args.data).is_dir() else None)
    else:
        split_file = resolve_model_path(args.model).parent / "split.csv"
        if not split_file.exists():
            return []
        samples = read_split(split_file)["val"]
    return [samples[i].path for i in evenly_spaced(len(samples), count)]


def cmd_export(args) -> int:
    from pneumoscan.export import export_run

    paths = _parity_paths(args, args.parity_images) if args.format == "onnx" else []
    calibration = _calibration_images(args.model, args.openvino_int8) if args.openvino_int8 else None
    card = export_run(args.model, args.out, fmt=args.format, parity_paths=paths, int8_calibration=calibration)
    print(f"exported to {args.out}: " + ", ".join(card["files"]))
    if card.get("openvino_int8"):
        print(f"OpenVINO int8 model: {Path(args.out) / 'model.int8.xml'} (check its metrics before serving it)")
    if card.get("onnx_parity"):
        parity = card["onnx_parity"]
        print(f"ONNX parity on {parity['images']} images: probability max abs diff {parity['prob_max_abs_diff']:.2e}, "
              f"heatmap {parity['heatmap_max_abs_diff']:.2e}, {parity['outcome_mismatches']} outcomes differ")
        if parity["prob_max_abs_diff"] > 1e-4 or parity["heatmap_max_abs_diff"] > 1e-3 or parity["outcome_mismatches"]:
            print("parity check FAILED (limits 1e-4 and 1e-3, no outcome may differ)", file=sys.stderr)
            return 1
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    from pneumoscan.serve import create_app

    app = create_app(args.model, max_upload_bytes=args.max_upload_mb * 1024 * 1024, precision=args.precision,
                     runtime_name=args.runtime)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def cmd_compare(args) -> int:
    from pneumoscan.compare import CompareConfig, compare
    from pneumoscan.settings import load_settings, parse_overrides

    overrides = {"data": args.data, "out": args.out, "models": args.models, "seeds": args.seeds,
                 "weights": args.weights, "base_config": args.config or "", "ablation": args.ablation,
                 "records": args.records}
    config = load_settings(CompareConfig, overrides={**overrides, **parse_overrides(args.set)})
    result = compare(config)
    print((Path(args.out) / "comparison.md").read_text())
    print(f"total {result['wall_seconds']:.0f} s; written to {args.out}")
    return 0


def cmd_tune(args) -> int:
    from pneumoscan.settings import load_settings, parse_overrides
    from pneumoscan.tune import TuneConfig, tune

    overrides = {"data": args.data, "out": args.out, "model": args.model, "trials": args.trials,
                 "timeout_minutes": args.timeout_minutes, "storage": args.storage, "workers": args.workers,
                 "base_config": args.config or ""}
    if args.weights:
        overrides["weights"] = args.weights
    summary = tune(load_settings(TuneConfig, overrides={**overrides, **parse_overrides(args.set)}))
    print(f"{summary['n_trials']} trials ({summary['n_pruned']} pruned) in {summary['wall_seconds']:.0f} s, "
          f"{summary['trials_per_hour']} per hour; best validation AUC {summary['val_auc']:.4f} "
          f"(trial {summary['best_trial']}); best settings in {summary['best_config']}")
    return 0


def cmd_demo(args) -> int:
    from pneumoscan.demo import DemoConfig, run_demo

    summary = run_demo(DemoConfig(out=args.out, epochs=args.epochs))
    _print_summary(Path(args.out) / "run")
    lesions = summary["lesions"]
    print(f"lesion hit rate {lesions['hit_rate']:.3f} ({lesions['hits']} of {lesions['pneumonia_phantoms']} "
          f"PNEUMONIA phantoms: the Grad-CAM peak on a known lesion)")
    print(f"open {Path(args.out) / 'report.html'}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "checks": cmd_checks,
            "explain": cmd_explain,
            "export": cmd_export, "serve": cmd_serve, "compare": cmd_compare, "tune": cmd_tune, "demo": cmd_demo}


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
