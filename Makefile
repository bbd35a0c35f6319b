# ket-infra: `make demo` runs the whole job on a local sandbox, `make test` runs the tests.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
ENV    ?=
EXAMPLES := $(wildcard examples/*.yaml)

.PHONY: demo test lint fmt bench rules clean

$(BIN)/ket-infra: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

demo: $(BIN)/ket-infra
	@for f in $(EXAMPLES); do echo "== ket-infra rules $$f"; $(BIN)/ket-infra rules $$f || exit 1; echo; done

test: $(BIN)/ket-infra
	$(BIN)/pytest -q

lint: $(BIN)/ket-infra
	$(BIN)/ruff check ket_infra tests bench
	$(BIN)/ruff format --check ket_infra tests bench
	$(BIN)/mypy ket_infra
	@if command -v terraform >/dev/null; then terraform fmt -check -recursive terraform templates; else echo "terraform not found: skipping terraform fmt -check"; fi

fmt: $(BIN)/ket-infra
	$(BIN)/ruff format ket_infra tests bench
	$(BIN)/ruff check --fix ket_infra tests bench

bench: $(BIN)/ket-infra
	$(BIN)/python bench/bench_rules.py --out bench/results.json

clean:
	rm -rf $(VENV) .work .pytest_cache .mypy_cache .ruff_cache .hypothesis
