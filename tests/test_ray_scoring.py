"""Tests of pneumoscan.inference.ray_scoring: a local Ray instance screens like the local path, past broken files."""

from __future__ import annotations

import pytest

from pneumoscan.cli import main
from pneumoscan.data import scan_kaggle_split


def test_ray_screens_a_folder_like_the_local_path(tiny_run, phantom_root, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'pneumoscan[ray]'")
    folder = tmp_path / "inputs"
    folder.mkdir()
    for sample in scan_kaggle_split(phantom_root, "test")[:10]:
        (folder / f"{sample.label}_{sample.path.split('/')[-1]}").write_bytes(open(sample.path, "rb").read())
    (folder / "broken.png").write_bytes(b"not an image")
    local, ray = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert main(["-q", "predict", str(tiny_run), str(folder), "--out", str(local)]) == 1  # 1: a file was unreadable
    assert main(["-q", "predict", str(tiny_run), str(folder), "--out", str(ray), "--engine", "ray", "--actors", "2",
                 "--batch-size", "4"]) == 1
    import csv

    local_rows, ray_rows = (list(csv.DictReader(path.open())) for path in (local, ray))
    assert [r["path"] for r in ray_rows] == [r["path"] for r in local_rows]  # same rows, in input order
    for a, b in zip(local_rows, ray_rows):
        assert (a["status"], a["label"], a["reason"]) == (b["status"], b["label"], b["reason"])
        for key in ("probability", "shift_score", "modality_probability"):  # actors run 1 thread: float order
            assert (a[key] == b[key] == "") or abs(float(a[key]) - float(b[key])) < 1e-5
    assert sum(r["status"] == "unreadable" for r in ray_rows) == 1


def test_without_ray_the_switch_says_how_to_install_it(tiny_run, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    assert main(["predict", str(tiny_run), str(image), "--engine", "ray"]) == 2
    assert "pip install 'pneumoscan[ray]'" in capsys.readouterr().err


def test_each_actor_runs_the_exported_model_on_its_share_of_the_cores(tmp_path):
    import torch

    from pneumoscan.data import Preprocessing
    from pneumoscan.export.files import export_onnx
    from pneumoscan.inference.ray_scoring import ScreenBatches
    from pneumoscan.models.checkpoint import LoadedModel
    from pneumoscan.models.networks import build_model

    loaded = LoadedModel.of(build_model("baseline_cnn", preprocessing=Preprocessing(image_size=64)).eval(),
                         threshold=0.5)
    path = export_onnx(loaded, tmp_path / "m.onnx")
    before = torch.get_num_threads()
    try:
        onnx = ScreenBatches(str(path), "onnxruntime", "fp32", 1)  # two actors on two cores: one thread each
        assert onnx.screener.engine.session.get_session_options().intra_op_num_threads == 1
        openvino = ScreenBatches(str(path), "openvino", "fp32", 1)
        assert openvino.screener.engine.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    finally:
        torch.set_num_threads(before)
