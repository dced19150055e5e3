"""The ``pneumoscan`` command line's arguments: one parser per command, with its help."""

from __future__ import annotations

import argparse

from pneumoscan.cli.anatomy import add_segment
from pneumoscan.cli.node import add_node_commands


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
                        "published, densenet121-tuned, end-to-end, densenet121-brain-mri (both brain MRI tasks) or "
                        "quick (the head alone on frozen features: a first real model in minutes)")
    p.add_argument("--weights", help="imagenet (torchvision download), none, or a state-dict file path")
    p.add_argument("--allow-partial-weights", action="store_true", default=None,
                   help="accept a weights file missing some tensors (they stay random; reported)")
    p.add_argument("--out", help="run folder (default runs/train)")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", help="JSON file of settings (see TrainConfig; unknown keys are refused)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set tail.epochs=5 augmentation.hflip=false")
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
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="ray: screen on a Ray cluster (pip install 'pneumoscan[ray]'), in stateful actors")
    p.add_argument("--address", default="", help="with --engine ray: a running cluster's address (default: a local "
                                                 "Ray instance)")
    p.add_argument("--actors", type=int, default=2, help="with --engine ray: model replicas screening in parallel")
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
    from pneumoscan.explain import METHODS
    from pneumoscan.explain.gradcam import SCALES

    p = sub.add_parser("explain", help="heatmaps: for images, a split's misclassification review, or two models",
                       description="Explain predictions with a heatmap (Grad-CAM by default). Give images, folders "
                                   "or CSVs; or --review SPLIT --data ROOT for galleries of confident hits and every "
                                   "error; or --compare OTHER_MODEL for side-by-side maps with their agreement.")
    p.add_argument("inputs", nargs="*", help="image files, folders or CSVs")
    p.add_argument("--model", required=True, help="run folder or model.pt")
    p.add_argument("--method", default="gradcam", choices=METHODS)
    p.add_argument("--target", default="predicted",
                   help="the class whose evidence is shown: predicted (default) or a class name, e.g. NORMAL")
    p.add_argument("--scale", default="image", choices=SCALES,
                   help="image: each map min-max scaled; probability: also times the explained class's probability, "
                        "so maps compare across images")
    p.add_argument("--out", required=True, help="output folder (panels, CSV, index.html)")
    p.add_argument("--save-arrays", action="store_true", help="also save each heatmap as a .npy array in [0, 1]")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--review", metavar="SPLIT", help="misclassification review of this split of --data")
    p.add_argument("--data", help="dataset root (Kaggle layout) or label CSV, for --review")
    p.add_argument("--confident", type=int, default=8, help="how many confident hits per class to show")
    p.add_argument("--anatomy", action="store_true",
                   help="with --review: measure each heatmap against the lungs (energy inside them against their "
                        "share of the film, peak, border and corners) per true/false positive/negative")
    p.add_argument("--masks", default="", help="with --anatomy: a folder of human lung masks laid out like --data "
                                               "(same relative paths, .png); default: the model's lung segmenter")
    p.add_argument("--compare", metavar="OTHER_MODEL", help="a second run folder or model.pt to compare with")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a trained model (ONNX or TorchScript) with its model card",
                       description="Export a model whose graph returns the class probabilities, the Grad-CAM "
                                   "heatmap of the predicted class and the input-check scores; checks ONNX against "
                                   "PyTorch on --parity-images images and writes a model card (Markdown + JSON).")
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
    p.add_argument("--max-upload-mb", type=int, default=20,
                   help="uploads over this are answered 413 (from the declared length, before reading; default 20)")
    p.add_argument("--upload-timeout", type=float, default=15.0,
                   help="seconds an upload may stall (no bytes arriving) before it is dropped with 408 (default 15)")
    p.add_argument("--inbox", help="a DICOM node's inbox folder: GET /v1/worklist lists its studies by urgency")
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
    p = sub.add_parser("demo", help="the whole job in minutes: train, evaluate, explain, report.html (phantoms or "
                                    "--data)",
                       description="End-to-end run, then report.html. Without --data: synthetic chest-X-ray-like "
                                   "phantoms with known lesions, the baseline CNN trained from scratch, its heatmaps "
                                   "scored against the lesions (a few minutes on 2 cores, no download; the phantom "
                                   "model refuses real films by design). With --data ROOT: the quick recipe "
                                   "(DenseNet121's head on frozen ImageNet features) on real labelled films.")
    p.add_argument("--out", default="runs/demo", help="folder for the data, the run and the report (default runs/demo)")
    p.add_argument("--data", help="a labelled folder of real films, ROOT/{train,test}/<class>/: the quick recipe on it")
    p.add_argument("--weights", default="auto",
                   help="with --data: ImageNet weights, 'auto' (torchvision's download) or a state-dict file")
    p.add_argument("--epochs", type=int, default=12, help="phantoms: epochs of the baseline CNN")


def _add_describe(sub) -> None:
    p = sub.add_parser("describe", help="what a model is: task, classes, modality, population, threshold, checks, "
                                        "metrics",
                       description="Print a model's description (saved in model.pt and embedded in exported files): "
                                   "its task and classes, the modality it screens, the population it was validated "
                                   "on, its intended use, threshold, input checks, metrics and limitations.")
    p.add_argument("model", help="run folder, model.pt, exported model.onnx or OpenVINO .xml")
    p.add_argument("--json", action="store_true", help="print it as JSON")


def _add_cache(sub) -> None:
    p = sub.add_parser("cache", help="where the activation cache is and how big; --clear frees it",
                       description="Training caches what the frozen trunk computes (reused by every later run on the "
                                   "same images) in $PNEUMOSCAN_CACHE, else ~/.cache/pneumoscan. This command shows "
                                   "its size, or deletes the caches with --clear.")
    p.add_argument("--dir", help="the cache folder (default: $PNEUMOSCAN_CACHE, else ~/.cache/pneumoscan)")
    p.add_argument("--clear", action="store_true", help="delete every activation cache in it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pneumoscan", description="Explainable screening of medical images: "
                                     "train, evaluate, screen, explain, export and serve.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_evaluate, _add_predict, _add_checks, _add_explain, _add_export, _add_serve,
                _add_compare, _add_tune, _add_demo, _add_describe, _add_cache, add_segment, add_node_commands):
        add(sub)
    return parser
