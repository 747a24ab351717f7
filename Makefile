# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

## make demo: pretrain the embedded default (scikit-learn digits), then probe it against raw pixels and random weights
demo: $(STAMP)
	$(BIN)/omnimae pretrain
	$(BIN)/omnimae probe checkpoint=latest

## make test: the whole test suite on CPU (a few minutes)
test: $(STAMP)
	$(BIN)/pytest -q

## make bench: speed ratios against Hugging Face ViTMAE (see benchmarks/README.md)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_step.py

clean:
	rm -rf $(VENV) runs
