# Two entry points (see README): `make demo` runs the main job, `make test` runs ruff and the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/pneumoscan demo --out runs/demo

test: install lint
	$(PY) -m pytest -q -n auto --dist worksteal

lint: install
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf runs .pytest_cache
