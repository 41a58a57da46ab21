# Everything runs inside .venv, made here from requirements.txt (Python 3.11).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# data/sample_small under conf/paths/default.yaml's data_dir, where conf/experiment/quickstart.yaml reads it.
SAMPLE := $${paths.data_dir}/sample_small

.PHONY: help setup test train sample generate bench bench-gpu demo clean

# The newest training run's checkpoint (run folders are named by time), for make demo; or make demo CKPT=<path>.
CKPT ?= $(lastword $(sort $(wildcard outputs/train/*/checkpoints/last.ckpt)))

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## .venv from requirements.txt

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

test: setup  ## the test suite
	$(BIN)/python -m pytest -q

# A small sample dataset: 40 backgrounds x 20 foregrounds (two zips of 16,000 composites each: enough for the
# 4k and 16k strategies, which train on zip 1's 10 foregrounds and validate and test on zip 2's), seconds to make.
sample: setup  ## the small sample dataset (data/sample_small, seconds)
	$(BIN)/python generate.py n_bg=40 n_fg=20 'out_dir=$(SAMPLE)' progress=false

# The first experience: set-up, the small sample, a short real training run on CPU (conf/experiment/quickstart.yaml).
train: sample  ## set-up, the small sample, a short real training run on CPU
	$(BIN)/python train.py experiment=quickstart

# The full sample dataset: 10 zips, 400,000 composites with masks and exact depth.
generate: setup  ## the full sample dataset (data/sample, 400,000 composites)
	$(BIN)/python generate.py

# The seed's approach and ours side by side, with ratios (bench/README.md); writes bench/RESULTS.md.
# About 8 minutes on 2 cores; `$(BIN)/python -m bench.run --quick` is a sanity run that only prints.
bench: setup  ## speed against the source document's approach (bench/RESULTS.md)
	$(BIN)/python -m bench.run

# Loader, model and end-to-end rates per model on one GPU, in bf16 with channels_last; within 8 minutes.
bench-gpu: setup  ## the GPU bench: which limits training on a GPU, loader or model (bench/RESULTS_GPU.md)
	$(BIN)/python -m bench.run --gpu --results bench/RESULTS_GPU.md

# A local web page: pick or upload a background and a composite, see the predicted mask and depth.
demo: setup  ## the demo page for the newest run's checkpoint (or CKPT=<path>)
	$(BIN)/python demo.py 'ckpt_path=$(CKPT)'

clean:  ## remove run folders (outputs, multirun, wandb, lightning_logs)
	rm -rf outputs multirun wandb lightning_logs
