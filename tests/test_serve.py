"""Tests of pneumoscan.serve with FastAPI's test client: predictions, DICOM in and out, every error path."""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tests.hostile import dicom_bytes

from pneumoscan.data import scan_kaggle_split
from pneumoscan.export.files import export_run
from pneumoscan.serve import create_app


@pytest.fixture(scope="module", params=["pytorch", "onnxruntime", "openvino"])
def client(request, tiny_run, tmp_path_factory):
    if request.param == "pytorch":
        app = create_app(tiny_run, max_upload_bytes=2_000_000)
    else:
        out = tmp_path_factory.mktemp("onnx")
        export_run(tiny_run, out)
        app = create_app(out / "model.onnx", max_upload_bytes=2_000_000, runtime_name=request.param,
                         precision="bf16" if request.param == "openvino" else "fp32")
    test_client = TestClient(app)
    test_client.expected_runtime = request.param
    return test_client


@pytest.fixture(scope="module")
def xray_bytes(phantom_root) -> bytes:
    return open(scan_kaggle_split(phantom_root, "test")[0].path, "rb").read()


def post(client, data: bytes, name="x.jpeg", content_type="image/jpeg", **params):
    return client.post("/v1/predict", params=params, files={"file": (name, data, content_type)})


def test_health_model_card_docs_and_page(client):
    assert client.get("/healthz").json()["status"] == "ok"
    model = client.get("/v1/model").json()
    assert 0 < model["threshold"] < 1 and model["preprocessing"]["image_size"] == 64
    assert model["runtime"] == client.expected_runtime and model["precision"] in ("fp32", "bf16")
    assert client.get("/docs").status_code == 200
    page = client.get("/").text
    assert "drop" in page.lower() and not re.search(r"(src|href)=[\"']https?://", page)  # no external assets


def test_predict_returns_probability_label_and_timing(client, xray_bytes):
    body = post(client, xray_bytes).json()
    assert 0 <= body["probability"] <= 1 and body["label"] in ("NORMAL", "PNEUMONIA")
    assert body["label"] == ("PNEUMONIA" if body["probability"] >= body["threshold"] else "NORMAL")
    assert body["timing_ms"]["total"] > 0 and "heatmap_png" not in body
    with_map = post(client, xray_bytes, heatmap="true").json()
    assert with_map["overlay_png"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_in_and_secondary_capture_out(client, xray_bytes, photometric):
    # a DICOM without a window is shown over its full range of values, an 8-bit image over 0-255: the same
    # picture stored both ways, spanning 0-255 (0-4080 in 12 bits), must get the same probability
    gray = np.asarray(Image.open(io.BytesIO(xray_bytes)).convert("L"), np.float64)
    full_range = np.round(255 * (gray - gray.min()) / np.ptp(gray)).astype(np.uint8)
    as_png = io.BytesIO()
    Image.fromarray(full_range).save(as_png, format="PNG")
    stored = full_range * 16.0
    data = dicom_bytes(stored if photometric == "MONOCHROME2" else 4080 - stored, photometric)
    body = post(client, data, name="study.dcm", content_type="application/dicom").json()
    png = post(client, as_png.getvalue(), name="x.png", content_type="image/png").json()
    assert body["probability"] == pytest.approx(png["probability"], abs=1e-4)
    response = post(client, data, name="study.dcm", content_type="application/dicom", output="dicom")
    assert response.status_code == 200 and response.headers["content-type"] == "application/dicom"
    capture = pydicom.dcmread(io.BytesIO(response.content))
    source = pydicom.dcmread(io.BytesIO(data))
    assert capture.PatientID == source.PatientID and capture.SOPClassUID.name == "Secondary Capture Image Storage"
    assert capture.pixel_array.shape == (64, 64, 3)


def _png_bomb() -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\0" * (1 + 20000) * 100, 9)  # highly compressible rows
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def _png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("case, status", [
    ("empty", 422), ("random_bytes", 415), ("truncated_jpeg", 422), ("text_content_type", 415),
    ("png_bomb", 413), ("blank", 422), ("too_large_upload", 413), ("noise", 422),
])
def test_bad_inputs_get_clear_4xx(client, xray_bytes, case, status):
    rng = np.random.default_rng(0)
    data, name, content_type = {
        "empty": (b"", "e.png", "image/png"),
        "random_bytes": (rng.bytes(5000), "r.jpeg", "image/jpeg"),
        "truncated_jpeg": (xray_bytes[: len(xray_bytes) // 3], "t.jpeg", "image/jpeg"),
        "text_content_type": (b"hello world", "notes.txt", "text/plain"),
        "png_bomb": (_png_bomb(), "bomb.png", "image/png"),
        "blank": (_png(np.full((64, 64), 128, np.uint8)), "blank.png", "image/png"),
        "too_large_upload": (b"\xff\xd8\xff" + rng.bytes(2_100_000), "big.jpeg", "image/jpeg"),
        "noise": (_png(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "noise.png", "image/png"),
    }[case]
    response = post(client, data, name=name, content_type=content_type)
    assert response.status_code == status, response.text
    # an upload over the limit is answered from its declared length, before its name is read
    assert ("over the upload limit" if case == "too_large_upload" else name) in response.json()["detail"]
    assert client.get("/healthz").status_code == 200


def _asgi_post(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes], then_stall: bool = False):
    """POST /v1/predict straight to the ASGI app: the body in ``chunks``, then (``then_stall``) nothing more, ever.
    Returns (status, JSON body, how many times the app asked for the body)."""
    import asyncio
    import json

    asked, sent = [0], []
    scope = {"type": "http", "http_version": "1.1", "method": "POST", "path": "/v1/predict", "raw_path": b"/v1/predict",
             "query_string": b"", "root_path": "", "scheme": "http", "server": ("test", 80), "client": ("test", 1),
             "headers": headers}

    async def receive():
        asked[0] += 1
        if asked[0] <= len(chunks):
            return {"type": "http.request", "body": chunks[asked[0] - 1],
                    "more_body": then_stall or asked[0] < len(chunks)}
        await asyncio.sleep(3600)  # a client that stopped sending

    async def send(message):
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), asked[0]


def test_an_upload_declared_over_the_limit_is_refused_unread(tiny_run):
    app = create_app(tiny_run, max_upload_bytes=2_000_000)
    status, body, asked = _asgi_post(app, [(b"content-type", b"multipart/form-data; boundary=x"),
                                           (b"content-length", str(50 * 1024 ** 3).encode())], [b"--x"])
    assert status == 413 and asked == 0
    assert "declares 53,687,091,200 bytes, over the upload limit of 2,000,000" in body["detail"]


def test_an_upload_that_stalls_is_dropped_after_the_stated_timeout(tiny_run):
    app = create_app(tiny_run, max_upload_bytes=2_000_000, stall_seconds=0.3)
    status, body, _ = _asgi_post(app, [(b"content-type", b"multipart/form-data; boundary=x"),
                                       (b"content-length", b"1000")], [b"--x\r\n"], then_stall=True)
    assert status == 408 and "stalled: no bytes for 0.3 s" in body["detail"]


def test_an_upload_that_grows_past_the_limit_without_declaring_it_is_dropped(tiny_run):
    app = create_app(tiny_run, max_upload_bytes=1000)
    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpeg"\r\nContent-Type: image/jpeg\r\n\r\n'
    chunks = [part + b"\xff" * 40_000, b"\xff" * 40_000, b"\xff" * 40_000]
    status, body, asked = _asgi_post(app, [(b"content-type", b"multipart/form-data; boundary=x"),
                                           (b"transfer-encoding", b"chunked")], chunks, then_stall=True)
    assert status == 413 and "passed the limit of 1,000 bytes" in body["detail"] and asked == 2
