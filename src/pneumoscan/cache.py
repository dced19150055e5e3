"""Caching what a frozen network computes, so training on a CPU pays for it once.

The trunk (frozen in both stages) runs once per image and per augmented view; its activations are
stored as float16 in a memory-mapped file. A cache is keyed by the trunk's weights, the
preprocessing, the augmentation, the number of views, the view seed and the list of image files, so
different seeds, splits and tuning trials that draw from the same pool of images share it. A killed
caching run continues where it stopped; two processes wanting one cache (tuning workers, ranks) take turns:
one fills it, the other then reads it.

In fp32 on a CPU a large cache is computed with ONNX Runtime (the trunk exported once per fill): on a
2-core AVX2 EPYC an augmented DenseNet121 view took 42 ms against 89 in PyTorch channels_last
(bench/results/cache_engines_densenet121.json), the fp32 outputs differing by about 1e-6. Where bf16
is native (AVX512, AMX) or on CUDA, PyTorch computes it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from pneumoscan.data.dataset import XRayDataset
from pneumoscan.data.preprocess import Augmentation, Preprocessing
from pneumoscan.data.records import Sample
from pneumoscan.device import autocast_for, effective_precision

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "onnxruntime")
ONNX_MIN_VIEWS = 1024  # below this, exporting the trunk (about 12 s for DenseNet121) costs more than it saves
FORMAT_VERSION = 3  # 2: augmented views computed in float32 (1 ran them under autocast); 3: the engine in every key
FLUSH_EVERY = 20  # batches between progress saves
LOG_EVERY_SECONDS = 60.0  # at most this long between saved-progress log lines, so a killed run's log
# (train.log, whose spans time a resumed run) also covers the caching it did


def module_fingerprint(module: nn.Module) -> str:
    """A hash of a module's parameters and buffers (its computation, given the architecture)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def files_fingerprint(samples: list[Sample]) -> str:
    """A hash of the image files (path and content) and labels of ``samples``.

    Content rather than modification time, so a dataset that is copied or provisioned again (new
    mtimes, same bytes) keeps its caches.
    """
    digest = hashlib.sha256()
    for sample in samples:
        stat = Path(sample.path).stat()
        content = _content_digest(sample.path, stat.st_size, stat.st_mtime_ns)
        digest.update(f"{sample.path}|{content}|{sample.label}\n".encode())
    return digest.hexdigest()[:20]


@functools.cache
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """A file's SHA-256, remembered in this process for as long as its size and mtime stay the same."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def activation_key(module: nn.Module, samples: list[Sample], preprocessing: Preprocessing, *,
                   augmentation: Augmentation | None = None, views: int = 1, view_seed: int = 0,
                   shifts: tuple[str, ...] = (), precision: str = "bf16",
                   engine: str = "torch") -> tuple[str, dict]:
    """The cache key of ``module``'s outputs on these views of these images, and what it was made from."""
    fields = {
        "format": FORMAT_VERSION, "module": module_fingerprint(module), "files": files_fingerprint(samples),
        "preprocessing": preprocessing.to_dict(), "views": views, "view_seed": view_seed,
        "augmentation": augmentation.to_dict() if augmentation else None, "precision": precision,
        "engine": engine,
    }
    if shifts:
        fields["shifts"] = list(shifts)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24], fields


def cache_folder(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"activations-{key}"


def cached_activations(module: nn.Module, samples: list[Sample], preprocessing: Preprocessing, *,
                       augmentation: Augmentation | None = None, views: int = 1, view_seed: int = 0,
                       shifts: tuple[str, ...] = (), cache_dir: str | Path,
                       batch_size: int = 64, workers: int = 2, precision: str = "bf16",
                       device: torch.device = torch.device("cpu"), engine: str = "auto",
                       desc: str = "caching") -> np.ndarray:
    """``module``'s outputs for every view of every sample, shape ``[len(samples) * views, ...]``.

    Row ``i * views + v`` is view ``v`` of ``samples[i]`` (with ``shifts``, ``views`` is their
    number). Read from the cache when present, computed (and resumed) otherwise. ``engine``: what
    computes them (see ``pick_engine``).
    """
    precision = effective_precision(precision, device)
    engine_asked, engine = engine, pick_engine(engine, precision, device, len(samples) * (len(shifts) or views))
    dataset = XRayDataset(samples, preprocessing, augmentation=augmentation, views=views, seed=view_seed,
                          shifts=shifts)
    key_args = dict(augmentation=augmentation, views=views, view_seed=view_seed, shifts=shifts, precision=precision)
    folder, key_fields = _keyed_folder(module, samples, preprocessing, cache_dir, engine=engine, **key_args)
    cached = _load_if_complete(folder, len(dataset), desc)
    if cached is not None:
        return cached
    used, run = _runner(engine, asked_by_name=engine_asked != "auto", module=module.to(device).eval(),
                        dataset=dataset, device=device, precision=precision, desc=desc)
    if used != engine:  # fell back to PyTorch: its own key, perhaps already cached (looked at below)
        folder, key_fields = _keyed_folder(module, samples, preprocessing, cache_dir, engine=used, **key_args)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(folder / "fill.lock"):  # two processes (tuning workers, ranks) wanting one cache: one fills it
        cached = _load_if_complete(folder, len(dataset), desc)
        if cached is not None:
            return cached
        return _fill_folder(folder, key_fields, dataset, run, used, precision, batch_size, workers, desc)


def _fill_folder(folder: Path, key_fields: dict, dataset, run, used: str, precision: str, batch_size: int,
                 workers: int, desc: str) -> np.ndarray:
    """Create (or resume) the activation store in ``folder`` and fill it."""
    data_path, progress_path = folder / "activations.npy", folder / "progress.json"
    progress = json.loads(progress_path.read_text()) if progress_path.exists() else {"done": 0}
    if progress["done"] == 0 or not data_path.exists():
        shape = run(dataset[0][0].unsqueeze(0)).shape[1:]
        (folder / "key.json").write_text(json.dumps(key_fields, indent=1))
        store = np.lib.format.open_memmap(data_path, mode="w+", dtype=np.float16, shape=(len(dataset), *shape))
        progress = {"done": 0}
    else:
        store = np.load(data_path, mmap_mode="r+")
        log.info("%s: resuming at %d of %d", desc, progress["done"], len(dataset))
    log.info("%s: %d views with %s (%s)", desc, len(dataset) - progress["done"], used, precision)
    _fill(run, dataset, store, progress, progress_path, batch_size, workers, desc)
    del store
    return np.load(data_path, mmap_mode="r")


def _keyed_folder(module, samples, preprocessing, cache_dir, **key_args) -> tuple[Path, dict]:
    """The cache folder of these activations and the fields of its key."""
    key, key_fields = activation_key(module, samples, preprocessing, **key_args)
    return cache_folder(cache_dir, key), key_fields


def _load_if_complete(folder: Path, rows: int, desc: str) -> np.ndarray | None:
    """The activations in ``folder`` when all ``rows`` of them were computed, else None."""
    progress_path, data_path = folder / "progress.json", folder / "activations.npy"
    done = json.loads(progress_path.read_text())["done"] if progress_path.exists() else 0
    if done < rows or not data_path.exists():
        return None
    log.info("%s: using cached activations %s", desc, folder)
    return np.load(data_path, mmap_mode="r")


def cached_outputs(module: nn.Module, inputs: np.ndarray, *, folder: Path, precision: str = "bf16",
                   device: torch.device = torch.device("cpu"), batch_size: int = 128) -> np.ndarray:
    """``module`` (eval mode) over cached ``inputs``, stored in ``folder`` under ``module``'s fingerprint.

    Used for the head stage's pooled features: the pretrained tail is the same for every seed and
    tuning trial, so they are computed once per activation cache.
    """
    path = folder / f"outputs-{module_fingerprint(module)}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    result = batched_logits(module, inputs, batch_size=batch_size, precision=precision, device=device,
                            desc="pooling features")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, result)
    tmp.replace(path)
    return result


@torch.inference_mode()
def batched_logits(module: nn.Module, inputs: np.ndarray | torch.Tensor, *, batch_size: int, precision: str,
                   device: torch.device, shape: tuple[int, ...] | None = None, desc: str = "") -> np.ndarray:
    """``module``'s outputs (eval mode, moved to ``device``) over an array of inputs, in batches (with a
    progress bar when ``desc`` names the work)."""
    module = module.to(device).eval()
    outputs = []
    for start in tqdm(range(0, len(inputs), batch_size), desc=desc, unit="batch", leave=False, disable=not desc):
        x = torch.as_tensor(np.asarray(inputs[start:start + batch_size], dtype=np.float32)).to(device)
        if shape is not None:
            x = x.view(len(x), *shape)
        with autocast_for(device, precision):
            outputs.append(module(x).float().cpu().numpy())
    return np.concatenate(outputs)


def pick_engine(engine: str, precision: str, device: torch.device, views: int) -> str:
    """What computes a cache: ``torch``, ``onnxruntime``, or ``auto``: ONNX Runtime for fp32 on a CPU
    over at least ``ONNX_MIN_VIEWS`` views, PyTorch otherwise (native bf16, CUDA, small caches)."""
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}: use one of {', '.join(ENGINES)}")
    cpu_fp32 = precision == "fp32" and torch.device(device).type == "cpu"
    if engine == "onnxruntime" and not cpu_fp32:
        raise ValueError(f"engine=onnxruntime computes fp32 on the CPU, not {precision} on {device}")
    if engine != "auto":
        return engine
    return "onnxruntime" if cpu_fp32 and views >= ONNX_MIN_VIEWS else "torch"


def _runner(engine: str, *, asked_by_name: bool, module: nn.Module, dataset, device, precision: str, desc: str):
    """``(engine used, function from a batch of images to float32 outputs)``. Where ONNX Runtime cannot take
    the module (exporter or runtime error), PyTorch computes it, with a warning, unless it was asked for by name."""
    if engine == "onnxruntime":
        try:
            return engine, _onnx_runner(module, dataset)
        except Exception as error:  # noqa: BLE001 - any exporter or runtime failure: PyTorch can do the work
            if asked_by_name:
                raise
            log.warning("%s: ONNX Runtime could not run the trunk (%s: %s); computing with PyTorch", desc,
                        type(error).__name__, error)
    return "torch", _torch_runner(module, device, precision)


def _torch_runner(module: nn.Module, device, precision: str):
    """``module`` in PyTorch on a channels_last copy (faster in bf16 and fp32: DenseNet121 135 vs 179
    ms/img), so the caller's module keeps its memory format."""
    fast = copy.deepcopy(module).to(memory_format=torch.channels_last)

    def run(images: torch.Tensor) -> np.ndarray:
        images = images.to(device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast_for(device, precision):
            return fast(images).float().cpu().numpy()

    return run


def _onnx_runner(module: nn.Module, dataset):
    """``module`` exported to ONNX and run by ONNX Runtime on the CPU with torch's thread count:
    a function from a batch of images (a tensor) to its float32 outputs."""
    import onnxruntime as ort

    example = torch.stack([dataset[0][0], dataset[0][0]])
    with torch.no_grad(), _quiet("onnxscript", "onnx_ir"):
        program = torch.onnx.export(module.cpu().eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    dynamo=True, external_data=False, verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(program.model_proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(images: torch.Tensor) -> np.ndarray:
        return session.run(None, {name: images.numpy()})[0]

    return run


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Raise these loggers to WARNING for a while (the ONNX exporter logs each optimization pass)."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _fill(run, dataset, store, progress, progress_path: Path, batch_size, workers, desc):
    """Compute the views from ``progress["done"]`` on into ``store`` with ``run`` (a batch of images to
    float32 outputs), saving progress as it goes."""
    start = progress["done"]
    loader = DataLoader(Subset(dataset, range(start, len(dataset))), batch_size=batch_size,
                        num_workers=workers, shuffle=False)
    row = start
    last_logged = time.monotonic()
    with tqdm(total=len(dataset), initial=start, desc=desc, unit="view") as bar:
        for batch, (images, _, _) in enumerate(loader, start=1):
            out = run(images)
            store[row:row + len(out)] = out.astype(np.float16)
            row += len(out)
            bar.update(len(out))
            if batch % FLUSH_EVERY == 0 or row == len(dataset):
                store.flush()
                _write_progress(progress_path, row)
                if time.monotonic() - last_logged >= LOG_EVERY_SECONDS or row == len(dataset):
                    log.info("%s: %d of %d saved", desc, row, len(dataset))
                    last_logged = time.monotonic()


def _write_progress(path: Path, done: int) -> None:
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"done": done}))
    tmp.replace(path)
