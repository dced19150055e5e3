"""The FastAPI app: ``POST /v1/predict``, ``GET /healthz``, ``GET /v1/model`` and the page at ``/``.

The handler only parses the upload and formats what ``screen.Screener`` decides, the same object the
CLI and the Python API screen with. Every input that is not scored gets a 4xx whose JSON says what
is wrong (``detail``) and how screening ended (``status``): too large (413), an unsupported type
(415), a corrupt or truncated file or too many pixels (``unreadable``, 422 or 413), blank, colour
or not of the model's modality (``refused``, 422). An image of the modality unlike the training population
is scored and comes back ``flagged``, with a warning. ``/v1/model`` is the model's description, which the
page reads for its words.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image

from pneumoscan import __version__
from pneumoscan.data.io import IMAGE_SIGNATURES, MAX_PIXELS, looks_like_dicom
from pneumoscan.explain.render import outline_rgba, overlay
from pneumoscan.export.card import card_path
from pneumoscan.inference.screen import UNREADABLE, Screening, load
from pneumoscan.serve.limits import STALL_SECONDS, BodyLimits

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ACCEPTED_TYPES = {"image/jpeg", "image/png", "image/bmp", "image/tiff", "image/x-ms-bmp", "application/dicom",
                  "application/octet-stream", ""}


def _png_data_uri(rgb_or_rgba: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb_or_rgba).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def heatmap_rgba(heatmap: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["jet"](np.clip(heatmap, 0, 1)) * 255).round().astype(np.uint8)


def load_model_card(model_path: Path) -> dict:
    """The model card beside an exported model, if there is one (a run folder has none: export writes it)."""
    card = card_path(model_path)
    return json.loads(card.read_text()) if model_path.is_file() and card.is_file() else {}


def _not_scored(status: int, outcome: str, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail, "status": outcome}, status_code=status)


def screening_json(result: Screening) -> dict:
    """The JSON fields of a scored screening (the same names as the CLI's CSV columns)."""
    return {"file": result.source, "status": result.status, "label": result.label,
            "probability": result.probability, "probabilities": result.probabilities, "threshold": result.threshold,
            "flagged": result.flagged, "warning": result.warning, "shift_score": result.shift_score,
            "modality_probability": result.modality_probability, "lung_area_fraction": result.lung_area_fraction,
            "heat_in_lungs": result.heat_in_lungs}


def create_app(model_path: str | Path, *, max_upload_bytes: int = 20 * 1024 * 1024, max_pixels: int = MAX_PIXELS,
               precision: str = "fp32", runtime_name: str = "auto", stall_seconds: float = STALL_SECONDS,
               inbox: str | Path | None = None) -> FastAPI:
    """The web app serving the model at ``model_path`` (a ``.onnx`` file, a run folder or ``model.pt``)
    with ``runtime_name`` (see ``runtime.load_runtime``). A body declared or grown over ``max_upload_bytes`` is
    answered 413, and one that stalls for ``stall_seconds`` 408 (``serve.limits``). With ``inbox`` (a DICOM node's,
    ``pneumoscan dicom-node``), ``GET /v1/worklist`` lists its studies by urgency."""
    model_path = Path(model_path)
    screener = load(model_path, precision=precision, runtime=runtime_name, max_pixels=max_pixels)
    described = screener.description
    card = load_model_card(model_path)
    version = card.get("version") or f"{described.arch}@{model_path.name}"
    app = FastAPI(title="pneumoscan", version=__version__,
                  description=f"{described.name}. {described.intended_use}")
    app.add_middleware(BodyLimits, max_bytes=max_upload_bytes, stall_seconds=stall_seconds)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (STATIC / "index.html").read_text()

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "runtime": screener.runtime, "model": version}

    @app.get("/v1/worklist")
    def worklist_of_the_node() -> JSONResponse:
        if inbox is None:
            return JSONResponse({"detail": "no DICOM node inbox: start the server with --inbox DIR"}, status_code=404)
        from pneumoscan.node.worklist import worklist

        return JSONResponse({"inbox": str(inbox), "studies": worklist(inbox)})

    @app.get("/v1/model")
    def model_card() -> dict:
        return {"version": version, "runtime": screener.runtime, "precision": screener.precision,
                "name": described.name, **described.to_dict(), "card": card}

    @app.post("/v1/predict")
    async def predict(file: UploadFile = File(..., description="an image of the model's modality: JPEG, PNG, BMP, "
                                                                "TIFF or DICOM"),
                      heatmap: bool = Query(False, description="include the Grad-CAM overlay as PNG images"),
                      output: str = Query("json", pattern="^(json|dicom)$",
                                          description="json, or dicom: a Secondary Capture of the overlay"),
                      target: str | None = Query(None, description="the class whose evidence the heatmap shows "
                                                                   "(default: the class the screening decided)")):
        started = time.perf_counter()
        name = file.filename or "upload"
        if target is not None and target.lower() not in [c.lower() for c in screener.classes]:
            return JSONResponse({"detail": f"target {target!r}: this model's classes are {list(screener.classes)}"},
                                status_code=422)
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            return _not_scored(413, UNREADABLE, f"{name}: upload is over the {max_upload_bytes // (1024 * 1024)} MB "
                                                f"limit")
        content_type = (file.content_type or "").split(";")[0].strip().lower()
        is_dicom = looks_like_dicom(data, name)
        if content_type not in ACCEPTED_TYPES and not content_type.startswith("image/"):
            return _not_scored(415, UNREADABLE, f"{name}: content type {content_type!r} is not an image; send JPEG, "
                                                f"PNG, BMP, TIFF or DICOM")
        if data and not is_dicom and not data.startswith(IMAGE_SIGNATURES):
            return _not_scored(415, UNREADABLE, f"{name}: not a JPEG, PNG, BMP, TIFF or DICOM file")
        result = await run_in_threadpool(screener.screen_one, (name, data), heatmap=heatmap or output == "dicom",
                                         target=target)
        if not result.scored:
            too_many_pixels = "pixel" in result.reason and "limit" in result.reason
            return _not_scored(413 if too_many_pixels else 422, result.status, f"{name}: {result.reason}")
        body = screening_json(result) | {"model_version": version, "runtime": screener.runtime}
        if output == "dicom":
            from pneumoscan.serve.dicom import read_identifiers, secondary_capture

            identifiers = read_identifiers(data) if is_dicom else {}
            description = (f"pneumoscan {result.label} p={result.probability:.4f} threshold={screener.threshold:.4f} "
                           f"({version})" + (" FLAGGED: unlike the training population" if result.flagged else ""))
            dicom = secondary_capture(overlay(result.image, result.heatmap, lungs=result.lungs), identifiers,
                                      description=description)
            return Response(dicom, media_type="application/dicom",
                            headers={"Content-Disposition": f'attachment; filename="{Path(name).stem}_overlay.dcm"',
                                     "X-Pneumoscan-Probability": f"{result.probability:.6f}",
                                     "X-Pneumoscan-Label": result.label,
                                     "X-Pneumoscan-Flagged": str(result.flagged).lower()})
        if heatmap:
            body["explained"] = result.explained
            body["image_png"] = _png_data_uri((result.image * 255).round().astype(np.uint8))
            body["heatmap_png"] = _png_data_uri(heatmap_rgba(result.heatmap))
            body["overlay_png"] = _png_data_uri(overlay(result.image, result.heatmap, lungs=result.lungs))
            if result.lungs is not None:
                body["lungs_png"] = _png_data_uri(outline_rgba(result.lungs))
        body["timing_ms"] = {"total": round(1000 * (time.perf_counter() - started), 2)}
        return body

    return app
