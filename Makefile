# Two entry points on a fresh clone: `make repro` (the pipeline) and `make test` (the suite).
# Both create .venv if missing and install the pinned dependencies first.
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: repro test test-fast clean-venv

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	touch $@

repro: $(VENV)/.installed
	dvc repro

test: $(VENV)/.installed
	python -m pytest

test-fast: $(VENV)/.installed
	python -m pytest -m "not slow"

clean-venv:
	rm -rf $(VENV)
