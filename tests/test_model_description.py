"""The model description: the task's words come from known data, task.json and settings; the description
travels from model.pt into ONNX, OpenVINO, the card, /v1/model and ``pneumoscan describe``; and no generic
module speaks of the default dataset."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import pneumoscan
from pneumoscan.data.known import BRAIN_MRI_FOLDERS
from pneumoscan.data.labels import DEFAULT_TASK, class_map
from pneumoscan.data.tasks import TASK_FILE, TaskSettings
from pneumoscan.models.checkpoint import load_model, redescribe
from pneumoscan.models.description import ModelDescription, task_words

SRC = Path(pneumoscan.__file__).parent
# Where the default task (the Kermany chest X-rays) and the datasets pneumoscan knows may be named: the
# default class order, Kermany file names' patients, the default task's phantoms, the known datasets'
# words, the recipes that say where they were validated, and the reader of the lung-mask dataset's sources.
DEFAULT_TASK_MODULES = {"data/labels.py", "data/samples.py", "data/synthetic.py", "data/known.py", "train/recipes.py",
                        "anatomy/masks.py"}


def test_no_generic_module_names_pneumonia_or_kermany():
    named = {}
    for path in sorted(SRC.rglob("*")):
        relative = path.relative_to(SRC).as_posix()
        if path.suffix not in (".py", ".html", ".js") or relative in DEFAULT_TASK_MODULES:
            continue
        hits = [n for n, line in enumerate(path.read_text().splitlines(), 1) if re.search("pneumonia|kermany", line,
                                                                                           re.IGNORECASE)]
        if hits:
            named[relative] = hits
    assert not named, f"generic modules naming the default dataset (file: lines): {named}"


def test_task_words_are_layered_generic_known_task_file_settings(tmp_path):
    generic = task_words(class_map(["cat", "dog"]))
    assert generic.name == "cat vs dog" and "pneumonia" not in json.dumps(generic.__dict__).lower()
    assert task_words(DEFAULT_TASK).modality == "chest X-ray"
    four = task_words(class_map(list(BRAIN_MRI_FOLDERS)))
    assert four.modality == "brain MRI" and four.words_for(tuple(BRAIN_MRI_FOLDERS))["notumor"] == "no tumour"
    binary = class_map(list(BRAIN_MRI_FOLDERS), "notumor=0,glioma=1,meningioma=1,pituitary=1")
    words = task_words(binary)
    assert words.name == "no tumour vs tumour on brain MRI"
    assert words.words_for(binary.names)[binary.names[1]] == "tumour"

    (tmp_path / TASK_FILE).write_text(json.dumps({"modality": "knee X-ray", "display": {"cat": "a cat"}}))
    from_file = task_words(class_map(["cat", "dog"]), tmp_path)
    assert from_file.modality == "knee X-ray" and from_file.words_for(("cat", "dog")) == {"cat": "a cat", "dog": "dog"}
    overridden = task_words(class_map(["cat", "dog"]), tmp_path, TaskSettings(modality="elbow X-ray"))
    assert overridden.modality == "elbow X-ray" and overridden.display == ("cat=a cat",)
    (tmp_path / TASK_FILE).write_text(json.dumps({"modalty": "typo"}))
    with pytest.raises(ValueError, match="task.json: expected an object with some of the keys"):
        task_words(class_map(["cat", "dog"]), tmp_path)


def test_the_description_travels_into_every_form_and_entry_point(brain_mri_model, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from pneumoscan.cli import main
    from pneumoscan.export.files import export_run
    from pneumoscan.serve import create_app

    saved = load_model(brain_mri_model).description
    assert saved.modality == "brain MRI" and saved.classes == tuple(BRAIN_MRI_FOLDERS)
    card = export_run(brain_mri_model, tmp_path)
    for form in (brain_mri_model, tmp_path / "model.onnx"):
        assert pneumoscan.load(form).description == saved
    assert pneumoscan.load(tmp_path / "model.onnx", runtime="openvino").description == saved
    assert ModelDescription.from_dict(saved.to_dict()) == saved

    markdown = (tmp_path / "model.card.md").read_text()
    served = TestClient(create_app(tmp_path / "model.onnx")).get("/v1/model").json()
    assert card["modality"] == served["modality"] == "brain MRI" and served["classes"] == list(BRAIN_MRI_FOLDERS)
    assert "notumor (no tumour)" in markdown and "brain MRI" in markdown
    for text in (markdown, json.dumps(card), json.dumps(served)):
        assert not re.search("pneumonia|kermany|chest", text, re.IGNORECASE)

    assert main(["describe", str(tmp_path / "model.onnx")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("pneumoscan baseline_cnn: glioma vs meningioma") and "modality: brain MRI" in printed
    assert main(["describe", str(brain_mri_model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["population"] == saved.population


def test_a_refusal_names_the_models_modality(brain_mri_model, tmp_path):
    import numpy as np
    from PIL import Image

    model = tmp_path / "model"
    shutil.copytree(brain_mri_model, model)
    redescribe(model, modality="ankle ultrasound")
    colour = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(colour)
    result = pneumoscan.load(model).screen_one(colour)
    assert result.status == "refused" and result.reason.endswith("not an ankle ultrasound")
