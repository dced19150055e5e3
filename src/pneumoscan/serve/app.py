"""The FastAPI app: ``POST /v1/predict``, ``GET /healthz``, ``GET /v1/model`` and the page at ``/``.

Every bad input gets a 4xx with a message saying what is wrong: too large (413), an unsupported
type (415), a corrupt or truncated file, too many pixels, a blank image or something that is not a
chest X-ray (422). The model runs through ``runtime`` (onnxruntime or OpenVINO for ``.onnx``, else
PyTorch).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from PIL import Image

from pneumoscan import __version__
from pneumoscan.data.io import MAX_PIXELS, ImageLoadError, load_image
from pneumoscan.data.labels import CLASSES
from pneumoscan.explain.render import overlay
from pneumoscan.ood import is_blank
from pneumoscan.runtime import card_path, load_runtime

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ACCEPTED_TYPES = {"image/jpeg", "image/png", "image/bmp", "image/tiff", "image/x-ms-bmp", "application/dicom",
                  "application/octet-stream", ""}
MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"II*\x00", b"MM\x00*")


def _is_dicom(data: bytes, filename: str) -> bool:
    return data[128:132] == b"DICM" or filename.lower().endswith((".dcm", ".dicom"))


def _png_data_uri(rgb_or_rgba: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb_or_rgba).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _heatmap_rgba(heatmap: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["jet"](np.clip(heatmap, 0, 1)) * 255).round().astype(np.uint8)


def load_model_card(model_path: Path) -> dict:
    """The model card beside an exported model or in a run folder, if there is one."""
    for candidate in (card_path(model_path), model_path.parent / "model_card.json",
                      model_path / "model_card.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return {}


def create_app(model_path: str | Path, *, max_upload_bytes: int = 20 * 1024 * 1024, max_pixels: int = MAX_PIXELS,
               precision: str = "fp32", runtime_name: str = "auto") -> FastAPI:
    """The web app serving the model at ``model_path`` (a ``.onnx`` file, a run folder or ``model.pt``)
    with ``runtime_name`` (see ``runtime.load_runtime``)."""
    model_path = Path(model_path)
    runtime = load_runtime(model_path, precision=precision, runtime=runtime_name)
    card = load_model_card(model_path) or {"metadata": runtime.metadata}
    version = card.get("version") or f"{runtime.metadata.get('arch', 'model')}@{model_path.name}"
    app = FastAPI(title="pneumoscan", version=__version__,
                  description="Explainable pneumonia screening on chest X-rays. Research use only: not a "
                              "medical device; a radiologist must read every image.")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (STATIC / "index.html").read_text()

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "runtime": runtime.runtime, "model": version}

    @app.get("/v1/model")
    def model_card() -> dict:
        return {"version": version, "runtime": runtime.runtime, "precision": runtime.precision,
                "threshold": runtime.threshold,
                "ood_threshold": runtime.ood_threshold, "preprocessing": runtime.preprocessing.to_dict(), "card": card}

    @app.post("/v1/predict")
    async def predict(file: UploadFile = File(..., description="a chest X-ray: JPEG, PNG, BMP, TIFF or DICOM"),
                      heatmap: bool = Query(False, description="include the Grad-CAM overlay as PNG images"),
                      output: str = Query("json", pattern="^(json|dicom)$",
                                          description="json, or dicom: a Secondary Capture of the overlay")):
        started = time.perf_counter()
        name = file.filename or "upload"
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"{name}: upload is over the {max_upload_bytes // (1024 * 1024)} MB limit")
        if not data:
            raise HTTPException(422, f"{name}: the file is empty")
        content_type = (file.content_type or "").split(";")[0].strip().lower()
        is_dicom = _is_dicom(data, name)
        if content_type not in ACCEPTED_TYPES and not content_type.startswith("image/"):
            raise HTTPException(415, f"{name}: content type {content_type!r} is not an image; send JPEG, PNG, "
                                     f"BMP, TIFF or DICOM")
        if not is_dicom and not data.startswith(MAGIC):
            raise HTTPException(415, f"{name}: not a JPEG, PNG, BMP, TIFF or DICOM file")
        try:
            gray = await run_in_threadpool(load_image, data, name=name, max_pixels=max_pixels)
        except ImageLoadError as err:
            status = 413 if "pixel" in err.problem and "limit" in err.problem else 422
            raise HTTPException(status, str(err)) from err
        if is_blank(gray):
            raise HTTPException(422, f"{name}: the image is blank (uniform grey levels); nothing to screen")
        decoded = time.perf_counter()
        image = runtime.preprocessing.resize(gray)
        batch = runtime.preprocessing.normalize(image)[None].numpy()
        prob, heat, ood = await run_in_threadpool(runtime.run, batch)
        probability, ood_score = float(prob[0]), float(ood[0])
        inferred = time.perf_counter()
        if runtime.ood_threshold is not None and ood_score > runtime.ood_threshold:
            raise HTTPException(422, f"{name}: this does not look like a chest X-ray (out-of-distribution score "
                                     f"{ood_score:.2f} > {runtime.ood_threshold:.2f}); it was not scored")
        label = CLASSES[int(probability >= runtime.threshold)]
        result = {"file": name, "probability": probability, "label": label, "threshold": runtime.threshold,
                  "model_version": version, "runtime": runtime.runtime, "ood_score": ood_score,
                  "ood_threshold": runtime.ood_threshold}
        gray_small = image[0].numpy()
        if output == "dicom":
            from pneumoscan.serve.dicom import read_identifiers, secondary_capture

            identifiers = read_identifiers(data) if is_dicom else {}
            description = f"pneumoscan {label} p={probability:.4f} threshold={runtime.threshold:.4f} ({version})"
            body = secondary_capture(overlay(gray_small, heat[0]), identifiers, description=description)
            return Response(body, media_type="application/dicom",
                            headers={"Content-Disposition": f'attachment; filename="{Path(name).stem}_overlay.dcm"',
                                     "X-Pneumoscan-Probability": f"{probability:.6f}", "X-Pneumoscan-Label": label})
        if heatmap:
            result["image_png"] = _png_data_uri((gray_small * 255).round().astype(np.uint8))
            result["heatmap_png"] = _png_data_uri(_heatmap_rgba(heat[0]))
            result["overlay_png"] = _png_data_uri(overlay(gray_small, heat[0]))
        result["timing_ms"] = {"decode": round(1000 * (decoded - started), 2),
                               "inference": round(1000 * (inferred - decoded), 2),
                               "total": round(1000 * (time.perf_counter() - started), 2)}
        return result

    return app
