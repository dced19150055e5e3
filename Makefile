# Two entry points (see README): `make demo` runs the main job, `make test` runs ruff and the test suite.
# `make demo` installs the runtime alone; `make test` adds the dev extras (pytest, Playwright, Ray, psycopg2).
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?=
WEIGHTS ?= $(wildcard ../shared/weights/densenet121_imagenet_keras.pth)

.PHONY: install demo test lint bench clean

$(VENV)/.runtime: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.runtime

# DATA=ROOT: the quick recipe on a labelled folder of real films (WEIGHTS: a local ImageNet state dict, found in
# ../shared/weights when it is there; otherwise torchvision downloads them)
demo: install
ifeq ($(DATA),)
	$(VENV)/bin/pneumoscan demo --out runs/demo
else
	$(VENV)/bin/pneumoscan demo --out runs/demo-real --data $(DATA) $(if $(WEIGHTS),--weights $(WEIGHTS))
endif

test: $(VENV)/.dev lint
	$(PY) -m pytest -q -n auto --dist worksteal

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf runs .pytest_cache
