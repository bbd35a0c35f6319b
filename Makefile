# ket-infra. `make demo` runs the whole job on a local sandbox; `make test` runs the tests.
# `make plan|apply|verify|audit|destroy ENV=name` drive a real environment (environments/NAME.yaml).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
ENV    ?=
DEMO_PLAN ?= examples/calico-overlay.yaml
DEMO_PORT ?= 5055
DEMO_ENV  := environments/sandbox.yaml
DEMO_CHANGES := .work/demo-plan.txt
# The machine image's offline provider mirror, when there is one.
KET_INFRA_TF_PLUGIN_DIR ?= $(wildcard /opt/tf-plugins)
export KET_INFRA_TF_PLUGIN_DIR

.PHONY: demo test lint fmt bench mutants plan apply verify audit destroy clean need-env lab

$(BIN)/ket-infra: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 1; }
	@echo "installing ket-infra and its tools into $(VENV) (pip's output: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --quiet --upgrade pip && $(BIN)/pip install --quiet -e '.[dev]'; } >$(VENV)/install.log 2>&1 \
		|| { tail -n 20 $(VENV)/install.log; echo "error: pip install failed; see $(VENV)/install.log"; exit 1; }
	@touch $@

demo: $(BIN)/ket-infra
	@command -v terraform >/dev/null || { echo "error: terraform not found; install Terraform >= 1.5 (https://developer.hashicorp.com/terraform/install)"; exit 1; }
	@set -e; \
	trap '$(BIN)/ket-infra sandbox down --port $(DEMO_PORT) >/dev/null 2>&1 || true' EXIT; \
	echo "== 1. the rules $(DEMO_PLAN) needs (its warnings: at the plan, step 3, for the sandbox's environment)"; \
	$(BIN)/ket-infra rules $(DEMO_PLAN) --quiet | head -n 12; echo "   ... (ket-infra rules $(DEMO_PLAN) shows all)"; \
	echo "== 2. sandbox: a local AWS API (moto) with one instance per node"; \
	$(BIN)/ket-infra sandbox up $(DEMO_PLAN) --port $(DEMO_PORT) --env-file $(DEMO_ENV) --reset; \
	echo "== 3. plan (each change with its purpose: $(DEMO_CHANGES))"; \
	mkdir -p .work; $(BIN)/ket-infra plan --env $(DEMO_ENV) > $(DEMO_CHANGES); \
	awk '/^ +[-+~<.=\/]+ /{n[$$2 ($$2 ~ /ingress|egress/ ? " rules" : "s")]++} /^(Plan|No changes)/{last=$$0} \
		END{for (k in n) printf "  %4d %s\n", n[k], k; print last}' $(DEMO_CHANGES); \
	echo "== 4. apply"; \
	$(BIN)/ket-infra apply --env $(DEMO_ENV); \
	echo "== 5. verify: every required flow open between every pair of nodes, judged from AWS's live state"; \
	$(BIN)/ket-infra verify --env $(DEMO_ENV); \
	echo "== 6. audit: nothing open beyond the required flows, whoever made the rules"; \
	$(BIN)/ket-infra audit --env $(DEMO_ENV); \
	echo "== 7. plan again: nothing left to change (--detailed-exitcode: 0 none, 2 changes)"; \
	code=0; $(BIN)/ket-infra plan --env $(DEMO_ENV) --detailed-exitcode --quiet || code=$$?; \
	echo "exit code $$code"; \
	echo "== 8. destroy (without --quiet it lists each resource first)"; \
	$(BIN)/ket-infra destroy --env $(DEMO_ENV) --auto-approve --quiet; \
	echo "== 9. sandbox down"; \
	$(BIN)/ket-infra sandbox down --port $(DEMO_PORT); \
	echo "demo complete"

# Each example plan as network namespaces behind its nftables rules (root; nftables bird2 etcd-server
# etcd-client): up, every flow and probe with packets and the real daemons, down. PLANS=... for others.
PLANS ?= $(wildcard examples/*.yaml)
lab: $(BIN)/ket-infra
	@set -e; for p in $(PLANS); do \
	  echo "== lab $$p"; \
	  $(BIN)/ket-infra lab up $$p $(if $(ENV),--env $(ENV)); \
	  $(BIN)/ket-infra lab run || { $(BIN)/ket-infra lab down; exit 3; }; \
	  $(BIN)/ket-infra lab down; \
	done

need-env:
	@test -n "$(ENV)" || { echo "error: set ENV, e.g. make $(MAKECMDGOALS) ENV=staging (reads environments/staging.yaml)"; exit 1; }

plan: $(BIN)/ket-infra need-env
	$(BIN)/ket-infra plan --env $(ENV)

apply: $(BIN)/ket-infra need-env
	$(BIN)/ket-infra apply --env $(ENV)

verify: $(BIN)/ket-infra need-env
	$(BIN)/ket-infra verify --env $(ENV)

# exit 3 when a rule on the nodes opens more than the plan needs; FORMAT=markdown for a review
audit: $(BIN)/ket-infra need-env
	$(BIN)/ket-infra audit --env $(ENV) $(if $(FORMAT),--format $(FORMAT))

# asks for yes on a terminal; AUTO_APPROVE=1 for a pipeline
destroy: $(BIN)/ket-infra need-env
	$(BIN)/ket-infra destroy --env $(ENV) $(if $(AUTO_APPROVE),--auto-approve)

test: $(BIN)/ket-infra
	$(BIN)/pytest -q -n 2 --dist load --maxschedchunk 1

lint: $(BIN)/ket-infra
	$(BIN)/ruff check ket_infra tests bench
	$(BIN)/ruff format --check ket_infra tests bench
	$(BIN)/mypy ket_infra
	@if command -v terraform >/dev/null; then terraform fmt -check -recursive ket_infra/modules; else echo "terraform not found: skipping terraform fmt -check"; fi

fmt: $(BIN)/ket-infra
	$(BIN)/ruff format ket_infra tests bench
	$(BIN)/ruff check --fix ket_infra tests bench

bench: $(BIN)/ket-infra
	$(BIN)/python bench/bench_rules.py --out bench/results.json
	$(BIN)/python bench/bench_aws.py --out bench/results.json
	$(BIN)/python bench/report.py

# Known breakages first (each must be caught), then mutation testing in three passes (hours on two
# cores; resumes where an interrupted run stopped; MODULES=workflow runs only the slow pass,
# MODULES=audit only the verdicts pass);
# writes bench/mutants.json and the README line.
MODULES ?= plan,flows,layout,verify,aws,workflow,terraform,audit,detach,compare
mutants: $(BIN)/ket-infra
	$(BIN)/python bench/breakages.py
	$(BIN)/python bench/mutants.py --modules $(MODULES) $(ARGS)

clean:
	rm -rf $(VENV) mutants .work .pytest_cache .mypy_cache .ruff_cache .hypothesis
