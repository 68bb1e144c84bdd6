# Two entry points on a fresh clone: `make repro` (the pipeline) and `make test` (the suite).
# Both create .venv if missing and install the pinned dependencies first.
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: repro test test-fast lint bench bench-gpu bench-tta grid compare baseline exp plots-offline clean-venv

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	# The project itself, editable (the `trafficsigns` command runs this checkout), its dependencies the lock's.
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -c requirements.lock -e .
	touch $@

# The remote tests' S3 server (SeaweedFS); their SSH server is the system's sshd (.ci/run installs it).
$(VENV)/.installed-test: $(VENV)/.installed requirements-test.lock
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -r requirements-test.lock
	touch $@

repro: $(VENV)/.installed
	dvc repro

# Two or more test processes (pytest-xdist): the suite waits on servers and subprocesses a good part of
# the time, so a second process fills the idle core. Each process starts its own servers (free ports).
PYTEST_PROCS := -n auto --maxprocesses 4

test: $(VENV)/.installed-test
	python -m pytest $(PYTEST_PROCS)
	$(MAKE) --no-print-directory lint

# ruff: lint rules and the format check (configured in pyproject.toml).
lint: $(VENV)/.installed
	ruff check .
	ruff format --check .

test-fast: $(VENV)/.installed-test
	python -m pytest $(PYTEST_PROCS) -m "not slow"

# Ours vs the FIDLE notebooks' way, each stage, in one run (full GTSRB scale; ~20 min on 2 CPU cores).
bench: $(VENV)/.installed
	python -m bench.run

# BENCH_ARGS passes options to the two below, e.g. BENCH_ARGS="--mirror ../shared/data/gtsrb-32px" (real archives).
# The default training on a GPU: float32 against mixed precision, XLA and a larger batch, op determinism checked
# (under 10 min; first installs the gpu extra where nvidia-smi lists a GPU that TensorFlow does not see). Without
# a GPU it says so and runs a tiny CPU version.
bench-gpu: $(VENV)/.installed
	python -m bench.gpu $(BENCH_ARGS)

# Time to accuracy: our default recipe against FIDLE's best (v2, 48 px RGB), same data, same cores (under 45 min).
bench-tta: $(VENV)/.installed
	python -m bench.tta $(BENCH_ARGS)

# Queue every combination in grid.yaml as a DVC experiment and run them, JOBS at a time (see README).
JOBS ?= 1
grid: $(VENV)/.installed
	python -m trafficsigns grid --start -j $(JOBS) --wait

# The same grid on Slurm: job arrays, one task per row, each in its own clone of HEAD (README, "Running
# on a cluster"); SLURM passes options, e.g. make cluster-grid SLURM="--cpus 8 --mem 32G --gpus 1 --wait".
.PHONY: cluster-grid
cluster-grid: $(VENV)/.installed
	python -m trafficsigns grid --slurm $(SLURM)

# What reports compare with (reports/baseline.json): the workspace's results, or make baseline EXP=<name>.
baseline: $(VENV)/.installed
	trafficsigns baseline $(EXP)

# One table over all experiments: reports/compare.html (self-contained) and reports/compare.md.
compare: $(VENV)/.installed
	python -m trafficsigns compare

# `dvc exp show` cut to what tells experiments apart and fitted to a 120-column terminal: the test
# accuracy and macro-F1, the best val accuracy and the training seconds, then the params that differ
# (trafficsigns/experiments/exp_table.py says how). `make exp ARGS=-A`: any `dvc exp show` option.
exp: $(VENV)/.installed
	python -m trafficsigns.experiments.exp_table $(ARGS)

# DVC's `plots show`/`plots diff` page loads Vega from a CDN and opens blank offline. This writes a page
# template with the same Vega releases inlined (fetched once from the npm registry) and points DVC at
# it in .dvc/config.local: from then on the pages open offline.
VEGA := vega-5.20.2 vega-lite-5.2.0 vega-embed-6.18.2
plots-offline: $(VENV)/.installed
	rm -rf .dvc/tmp/vega && mkdir -p .dvc/tmp/vega
	cd .dvc/tmp/vega && for p in $(VEGA); do \
	  npm pack --silent $${p%-*}@$${p##*-} >/dev/null && mkdir $$p && tar xzf $$p.tgz -C $$p || exit 1; done
	{ echo '<!DOCTYPE html><html><head><meta charset="utf-8"><title>DVC Plot</title>'; \
	  for p in $(VEGA); do echo '<script>'; cat .dvc/tmp/vega/$$p/package/build/$${p%-*}.min.js; echo '</script>'; done; \
	  echo '<style>table { border-spacing: 15px; }</style></head><body>{plot_divs}</body></html>'; \
	} > .dvc/tmp/plots_offline.html
	dvc config --local plots.html_template tmp/plots_offline.html

clean-venv:
	rm -rf $(VENV)
