"""What each ``pneumoscan`` command does: parse its arguments into settings, call its stage, print the outcome.
Each command imports its stage when it runs, so ``pneumoscan --help`` starts fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from pneumoscan.cli.anatomy import review_anatomy


def cmd_train(args) -> int:
    from pneumoscan.settings import load_settings, parse_overrides
    from pneumoscan.train import TrainConfig, train
    from pneumoscan.train.recipes import recipe_settings

    overrides = {k: v for k, v in {"data": args.data, "model": args.model, "weights": args.weights,
                                   "out": args.out, "seed": args.seed,
                                   "allow_partial_weights": args.allow_partial_weights}.items() if v is not None}
    overrides.update(parse_overrides(args.set))
    from pneumoscan.device import pick_device
    from pneumoscan.train.recipes import chosen_recipe

    probe = load_settings(TrainConfig, file=args.config, overrides=overrides)
    recipe = chosen_recipe(args.recipe, probe.model, pick_device(probe.device).type)
    config = load_settings(TrainConfig, base=recipe_settings(recipe), file=args.config, overrides=overrides)
    if args.print_settings:
        from pneumoscan.settings import to_dict

        print(json.dumps(to_dict(config.resolved()), indent=2))
        return 0
    if not config.data and not config.split:
        raise ValueError("no training data: pass --data ROOT_OR_CSV (or a split in --config)")
    from pneumoscan.distributed import Ranks

    run_dir = train(config, resume=args.resume)
    if Ranks.from_environment().main:  # under torchrun, rank 0 finishes the run and reports it
        _print_summary(run_dir)
        if config.recipe == "quick":
            from pneumoscan.train.recipes import QUICK_NOTE

            print(QUICK_NOTE)
    return 0


def cmd_cache(args) -> int:
    from pneumoscan.storage import cache_bytes, clear_cache, default_cache_dir, format_bytes

    folder = Path(args.dir) if args.dir else default_cache_dir()
    if args.clear:
        print(f"{folder}: freed {format_bytes(clear_cache(folder))}")
        return 0
    entries = len(list(folder.glob("activations-*"))) if folder.is_dir() else 0
    print(f"{folder}: {format_bytes(cache_bytes(folder))} in {entries} activation caches "
          "(PNEUMOSCAN_CACHE moves it; pneumoscan cache --clear frees it)")
    return 0


def _print_summary(run_dir: Path) -> None:
    from pneumoscan.run_folder import RunFolder

    metrics = json.loads(RunFolder(run_dir).metrics.read_text())
    print(f"run folder: {run_dir}")
    interval = metrics.get("threshold_ci95")
    spread = f"; 95% interval over validation patients {interval[0]:.4f} to {interval[1]:.4f}" if interval else ""
    if "threshold" in metrics:
        print(f"threshold {metrics['threshold']:.4f} ({metrics['threshold_rule']}, chosen on validation{spread})")
    else:
        print(f"classes {', '.join(metrics['classes'])}: the most probable class is the label")
    for split in ("validation", "test"):
        if split in metrics and "at_argmax" in metrics[split]:
            m = metrics[split]["at_argmax"]
            print(f"{split:>10}: accuracy {m['accuracy']:.4f}  balanced accuracy {m['balanced_accuracy']:.4f}  "
                  f"macro-F1 {m['macro_f1']:.4f}  macro AUC {m['macro_auc']:.4f} (most probable class)")
        elif split in metrics:
            m = metrics[split]["at_threshold"]
            print(f"{split:>10}: AUC {m['auc']:.4f}  accuracy {m['accuracy']:.4f}  sensitivity "
                  f"{m['sensitivity']:.4f}  specificity {m['specificity']:.4f}  F1 {m['f1']:.4f}")


def cmd_evaluate(args) -> int:
    from pneumoscan.cli.settings import EvaluateSettings, command_settings
    from pneumoscan.data.labels import ClassMap
    from pneumoscan.data.records import load_samples
    from pneumoscan.evaluate import evaluate_screened
    from pneumoscan.inference.screen import load
    from pneumoscan.models.checkpoint import resolve_model_path

    cfg = command_settings(EvaluateSettings, args)
    screener = load(cfg.model, runtime=cfg.runtime, precision=cfg.precision)
    classes = ClassMap(tuple(screener.classes))  # labels are read as the model's class names (or indices)
    samples = load_samples(cfg.data, cfg.split if Path(cfg.data).is_dir() else None, classes)
    name = cfg.split if Path(cfg.data).is_dir() else Path(cfg.data).stem
    model = Path(cfg.model)
    out = Path(cfg.out) if cfg.out else (resolve_model_path(model).parent if model.suffix in ("", ".pt")
                                           else model.parent) / f"eval-{name}"
    result = evaluate_screened(screener, samples, out_dir=out, name=name)
    counts = result["screening"]
    if "at_argmax" in result:
        m = result["at_argmax"]
        print(f"{name}: accuracy {m['accuracy']:.4f} [{m['ci95']['accuracy'][0]:.4f}, {m['ci95']['accuracy'][1]:.4f}]"
              f"  macro-F1 {m['macro_f1']:.4f}  balanced accuracy {m['balanced_accuracy']:.4f}  macro AUC "
              f"{m['macro_auc']:.4f}, over the {counts['scored']} of {counts['images']} images scored; "
              f"written to {out}")
        return 0
    m = result["at_threshold"]
    print(f"{name}: AUC {m['auc']:.4f} [{m['ci95']['auc'][0]:.4f}, {m['ci95']['auc'][1]:.4f}]  accuracy "
          f"{m['accuracy']:.4f}  sensitivity {m['sensitivity']:.4f}  specificity {m['specificity']:.4f}  "
          f"at threshold {screener.threshold:.4f}, over the {counts['scored']} of {counts['images']} images scored "
          f"({counts['flagged']} flagged, {counts['refused']} refused, {counts['unreadable']} unreadable); "
          f"written to {out}")
    return 0


def cmd_predict(args) -> int:
    from pneumoscan.cli.settings import PredictSettings, command_settings
    from pneumoscan.data.records import expand_inputs
    from pneumoscan.evaluate.report import screening_counts
    from pneumoscan.inference.predict import write_screenings_csv
    from pneumoscan.inference.screen import load

    cfg = command_settings(PredictSettings, args)
    screener = load(cfg.model, runtime=cfg.runtime, precision=cfg.precision)
    paths = expand_inputs(list(cfg.inputs))
    if not paths:
        raise ValueError(f"no images found in {cfg.inputs}")
    if cfg.engine == "ray":
        from pneumoscan.inference.ray_scoring import screen_with_ray

        results = screen_with_ray(cfg.model, paths, address=cfg.address, actors=cfg.actors,
                                  batch_size=cfg.batch_size, runtime=cfg.runtime, precision=cfg.precision)
    else:
        results = screener.screen(paths, batch_size=cfg.batch_size)
    if cfg.out:
        write_screenings_csv(cfg.out, results, screener.classes, lungs=screener.draws_lungs)
        print(f"{len(results)} screenings written to {cfg.out}")
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
    from pneumoscan.input_checks.checks import InputCheckSettings
    from pneumoscan.run_folder import RunFolder
    from pneumoscan.settings import from_dict, parse_overrides
    from pneumoscan.train.finish import refit_input_checks
    from pneumoscan.train.setup import run_config

    base = run_config(args.model).input_checks
    values = {**base.to_dict(), **parse_overrides(args.set), "accept": args.accept, "refuse": args.refuse}
    report = refit_input_checks(args.model, from_dict(InputCheckSettings, values))
    fitted = report["fitted_on"]
    print(f"input checks of {args.model} fitted again: accepts {100 * fitted['fit_accepted']:.1f}% of the modality's "
          f"examples, refuses {100 * fitted['fit_refused']:.1f}% of the others; report in "
          f"{RunFolder(args.model).input_checks}")
    return 0


def cmd_explain(args) -> int:
    from pneumoscan.cli.settings import ExplainSettings, command_settings
    from pneumoscan.data.records import expand_inputs
    from pneumoscan.explain import run as explain_run
    from pneumoscan.models.checkpoint import load_model

    cfg = command_settings(ExplainSettings, args)
    loaded = load_model(cfg.model)
    if cfg.review:
        from pneumoscan.data.records import load_samples
        from pneumoscan.inference.screen import load

        if not cfg.data:
            raise ValueError("--review needs --data (the dataset root or label CSV)")
        samples = load_samples(cfg.data, cfg.review if Path(cfg.data).is_dir() else None)
        results = load(cfg.model).screen([s.path for s in samples], desc=f"screening {cfg.review}")
        keep, names = [i for i, r in enumerate(results) if r.scored], list(loaded.classes.names)
        counts = explain_run.review_gallery(loaded, [samples[i] for i in keep],
                                            np.array([results[i].probability for i in keep]), cfg.out,
                                            method=cfg.method, confident=cfg.confident,
                                            predicted=np.array([names.index(results[i].label) for i in keep]))
        print(f"review of {len(keep)} images written to {cfg.out}/index.html: " +
              ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
        if cfg.anatomy:
            review_anatomy(cfg, loaded, [samples[i] for i in keep])
        return 0
    paths = expand_inputs(list(cfg.inputs))
    if not paths:
        raise ValueError("nothing to explain: give images, folders or CSVs (or --review SPLIT --data ROOT)")
    if cfg.compare:
        summary = explain_run.compare_models(loaded, load_model(cfg.compare), paths, cfg.out, method=cfg.method,
                                             names=(Path(cfg.model).name, Path(cfg.compare).name))
        print(f"{summary['images']} images compared: mean Spearman {summary['mean_spearman']:.3f}, mean top-20% "
              f"IoU {summary['mean_top_iou']:.3f}; see {cfg.out}/index.html")
        return 0
    rows = explain_run.explain_files(loaded, paths, cfg.out, method=cfg.method, target=cfg.target,
                                     save_arrays=cfg.save_arrays, batch_size=cfg.batch_size, scale=cfg.scale)
    failed = sum(bool(r["error"]) for r in rows)
    unreadable = f"; {failed} files unreadable" if failed else ""
    print(f"{len(rows) - failed} explanations written to {cfg.out}{unreadable}")
    return 1 if failed else 0


def cmd_export(args) -> int:
    from pneumoscan.cli.settings import ExportSettings, command_settings
    from pneumoscan.export.files import calibration_inputs, export_run, parity_images

    cfg = command_settings(ExportSettings, args)
    paths = parity_images(cfg.model, cfg.parity_images, cfg.data, cfg.split) if cfg.format == "onnx" else []
    calibration = calibration_inputs(cfg.model, cfg.openvino_int8) if cfg.openvino_int8 else None
    card = export_run(cfg.model, cfg.out, fmt=cfg.format, parity_paths=paths, int8_calibration=calibration)
    print(f"exported to {cfg.out}: " + ", ".join(card["files"]))
    if card.get("openvino_int8"):
        print(f"OpenVINO int8 model: {Path(cfg.out) / 'model.int8.xml'} (check its metrics before serving it)")
    if card.get("onnx_parity"):
        parity = card["onnx_parity"]
        print(f"ONNX parity on {parity['images']} images: probability max abs diff {parity['prob_max_abs_diff']:.2e}, "
              f"heatmap {parity['heatmap_max_abs_diff']:.2e}, {parity['outcome_mismatches']} outcomes differ")
    return 0


def cmd_describe(args) -> int:
    from pneumoscan.inference.screen import load

    description = load(args.model).description
    print(json.dumps(description.to_dict(), indent=2) if args.json else "\n".join(description.summary_lines()))
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    from pneumoscan.cli.settings import ServeSettings, command_settings
    from pneumoscan.serve import create_app

    cfg = command_settings(ServeSettings, args)
    app = create_app(cfg.model, max_upload_bytes=cfg.max_upload_mb * 1024 * 1024, precision=cfg.precision,
                     runtime_name=cfg.runtime, stall_seconds=cfg.upload_timeout, inbox=cfg.inbox or None)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")
    return 0


def cmd_compare(args) -> int:
    from pneumoscan.settings import load_settings, parse_overrides
    from pneumoscan.studies.compare import CompareConfig, compare

    overrides = {"data": args.data, "out": args.out, "models": args.models, "seeds": args.seeds,
                 "weights": args.weights, "base_config": args.config or "", "ablation": args.ablation}
    config = load_settings(CompareConfig, overrides={**overrides, **parse_overrides(args.set)})
    result = compare(config)
    print((Path(args.out) / "comparison.md").read_text())
    print(f"total {result['wall_seconds']:.0f} s; written to {args.out}")
    return 0


def cmd_tune(args) -> int:
    from pneumoscan.settings import load_settings, parse_overrides
    from pneumoscan.studies.tune import TuneConfig, tune

    overrides = {"data": args.data, "out": args.out, "model": args.model, "trials": args.trials,
                 "timeout_minutes": args.timeout_minutes, "storage": args.storage, "workers": args.workers,
                 "base_config": args.config or ""}
    if args.weights:
        overrides["weights"] = args.weights
    summary = tune(load_settings(TuneConfig, overrides={**overrides, **parse_overrides(args.set)}))
    print(f"{summary['n_trials']} trials ({summary['n_pruned']} pruned) in {summary['wall_seconds']:.0f} s, "
          f"{summary['trials_per_hour']} per hour; best {summary['objective']} {summary['best_value']:.4f} "
          f"(trial {summary['best_trial']}); best settings in {summary['best_config']}")
    return 0


def cmd_demo(args) -> int:
    from pneumoscan.demo import DemoConfig, run_demo

    summary = run_demo(DemoConfig(out=args.out, epochs=args.epochs, data=args.data or "", weights=args.weights))
    _print_summary(Path(args.out) / "run")
    lesions = summary.get("lesions")
    if lesions:
        print(f"lesion hit rate {lesions['hit_rate']:.3f} ({lesions['hits']} of {lesions['lesion_phantoms']} "
              f"phantoms with a lesion: the Grad-CAM peak on it)")
        print("this phantom model refuses real chest X-rays by design; for a real one: make demo DATA=ROOT")
    else:
        from pneumoscan.train.recipes import QUICK_NOTE

        print(QUICK_NOTE)
    print(f"open {Path(args.out) / 'report.html'}")
    return 0
