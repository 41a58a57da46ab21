# Everything runs inside .venv, made here from requirements.txt (Python 3.11).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# data/sample_small under conf/paths/default.yaml's data_dir, where conf/experiment/quickstart.yaml reads it.
SAMPLE := $${paths.data_dir}/sample_small

.PHONY: setup test train sample generate bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

test: setup
	$(BIN)/python -m pytest -q

# A small sample dataset: 40 backgrounds x 20 foregrounds (two zips of 16,000 composites each: enough for the
# 4k and 16k strategies, which train on zip 1's 10 foregrounds and validate and test on zip 2's), seconds to make.
sample: setup
	$(BIN)/python generate.py n_bg=40 n_fg=20 'out_dir=$(SAMPLE)' progress=false

# The first experience: set-up, the small sample, a short real training run on CPU (conf/experiment/quickstart.yaml).
train: sample
	$(BIN)/python train.py experiment=quickstart

# The full sample dataset: 10 zips, 400,000 composites with masks and exact depth.
generate: setup
	$(BIN)/python generate.py

# The seed's approach and ours side by side, with ratios (bench/README.md); writes bench/RESULTS.md.
# A few minutes on 2 cores; `$(BIN)/python -m bench.run --quick` is a sanity run that only prints.
bench: setup
	$(BIN)/python -m bench.run

clean:
	rm -rf outputs multirun wandb lightning_logs
