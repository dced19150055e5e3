"""Serving benchmark: a real uvicorn server under load, and under 200 malformed requests.

    python -m bench.serve --model bench/work/accuracy_densenet121/inference/model.onnx

500 requests from 8 concurrent clients (real test X-rays, heatmaps included in half of them), then
200 malformed ones (random bytes, truncated JPEGs, huge dimensions, wrong content type, a PNG
decompression bomb, blank images, photos/noise/documents). Writes ``bench/results/serve.json``.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

from bench.common import DATA, ROOT, SHARED, launch_commit, write_result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "pneumoscan.cli", "-q", "serve", model, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("the server did not start")


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _png_bomb() -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 60001 * 50, 9)) + chunk(b"IEND", b""))


def malformed_requests(xrays: list[bytes], count: int = 200) -> list[tuple[str, bytes, str, str]]:
    """(kind, bytes, file name, content type) of broken, hostile and non-X-ray uploads."""
    rng = np.random.default_rng(0)
    photos = []
    try:
        from sklearn.datasets import load_sample_images
        photos = [Image.fromarray(p) for p in load_sample_images().images]  # two real photographs
    except (ImportError, OSError):
        pass
    brain = sorted((SHARED / "data" / "brain_tumor_mri" / "Testing").rglob("*.jpg"))[:20]
    makers = [
        ("random_bytes", lambda i: (rng.bytes(int(rng.integers(10, 50_000))), f"r{i}.jpg", "image/jpeg")),
        ("truncated_jpeg", lambda i: (xrays[i % len(xrays)][: int(rng.integers(50, 2000))], f"t{i}.jpeg",
                                      "image/jpeg")),
        ("huge_dimensions", lambda i: (_png_bomb()[:200] if i % 2 else _png_bomb(), f"h{i}.png", "image/png")),
        ("wrong_content_type", lambda i: (b"<html>not an image</html>", f"w{i}.html", "text/html")),
        ("png_bomb", lambda i: (_png_bomb(), f"b{i}.png", "image/png")),
        ("blank", lambda i: (_encode(Image.new("L", (300, 300), int(rng.integers(0, 255))), "PNG"), f"k{i}.png",
                             "image/png")),
        ("noise", lambda i: (_encode(Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)), "PNG"),
                             f"n{i}.png", "image/png")),
        ("document", lambda i: (_encode(_document(i), "PNG"), f"d{i}.png", "image/png")),
        ("photo", lambda i: (_encode(photos[i % len(photos)].rotate(i * 7), "JPEG"), f"p{i}.jpeg", "image/jpeg")),
        ("brain_mri", lambda i: (brain[i % len(brain)].read_bytes(), f"m{i}.jpg", "image/jpeg")),
    ]
    makers = [m for m in makers if not (m[0] == "photo" and not photos) and not (m[0] == "brain_mri" and not brain)]
    return [(makers[i % len(makers)][0], *makers[i % len(makers)][1](i)) for i in range(count)]


def _document(i: int) -> Image.Image:
    page = Image.new("L", (600, 800), 250)
    draw = ImageDraw.Draw(page)
    for line in range(30):
        draw.text((40, 30 + 25 * line), f"Report {i}, line {line}: lorem ipsum dolor sit amet, consectetur.", fill=20)
    return page


def error_detail(response: httpx.Response) -> str | None:
    """The server's message for a refused request (None when it was scored); plain text bodies as they are."""
    if response.status_code == 200:
        return None
    try:
        return str(response.json().get("detail", ""))
    except ValueError:
        return response.text


def load_test(url: str, xrays: list[bytes], requests: int, clients: int) -> dict:
    def one(i: int):
        started = time.perf_counter()
        response = httpx.post(f"{url}/v1/predict", params={"heatmap": str(i % 2 == 0).lower()},
                              files={"file": (f"x{i}.jpeg", xrays[i % len(xrays)], "image/jpeg")}, timeout=120)
        return response.status_code, 1000 * (time.perf_counter() - started), error_detail(response)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    latencies = sorted(ms for _, ms, _ in results)
    codes = [code for code, _, _ in results]
    refusals = sorted({message for _, _, message in results if message is not None})
    return {"requests": requests, "clients": clients, "ok": codes.count(200),
            "errors_5xx": sum(c >= 500 for c in codes), "other_codes": sorted({c for c in codes if c != 200}),
            "distinct_images": len(xrays), "refusal_messages": refusals,
            "p50_ms": statistics.median(latencies), "p95_ms": latencies[int(0.95 * len(latencies)) - 1],
            "rps": requests / wall, "wall_seconds": wall}


def malformed_test(url: str, xrays: list[bytes]) -> dict:
    by_kind: dict[str, list[int]] = {}
    details = {}
    for kind, data, name, content_type in malformed_requests(xrays):
        response = httpx.post(f"{url}/v1/predict", files={"file": (name, data, content_type)}, timeout=120)
        by_kind.setdefault(kind, []).append(response.status_code)
        if kind not in details:
            details[kind] = (error_detail(response) or "scored!")[:200]
    codes = [c for cs in by_kind.values() for c in cs]
    healthy = httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    return {"requests": len(codes), "non_4xx": sum(not 400 <= c < 500 for c in codes), "healthy_after": healthy,
            "status_by_kind": {k: sorted(set(v)) for k, v in by_kind.items()},
            "accepted_by_kind": {k: sum(c == 200 for c in v) for k, v in by_kind.items()},
            "example_messages": details}


def main() -> None:
    launch_commit()  # the commit the benchmark starts from: the tree may change while it runs
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(ROOT / "bench" / "work" / "accuracy_densenet121" / "inference" /
                                               "model.onnx"))
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    xrays = [Path(p).read_bytes() for p in sorted((DATA / "test").rglob("*.jpeg"))[::13]]
    port = free_port()
    server = start_server(args.model, port)
    try:
        url = f"http://127.0.0.1:{port}"
        load = load_test(url, xrays, args.requests, args.clients)
        print("load", load)
        malformed = malformed_test(url, xrays)
        print("malformed", malformed)
    finally:
        server.terminate()
        server.wait(timeout=30)
    write_result("serve", {"model": args.model, "load": load, "malformed": malformed})


if __name__ == "__main__":
    main()
