# s3sync: every target sets up .venv first (python3 -m venv + pip install -e '.[dev]'), so each works on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
S3SYNC := $(VENV)/bin/s3sync
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast simulate lint templates bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup          ## the end-to-end demo on embedded local servers
	$(S3SYNC) demo

test: setup          ## unit, template and end-to-end tests against real local servers
	$(PY) -m pytest -q

test-fast: setup     ## the edit loop: every test but those marked `system` (the local system, subprocesses, simulation)
	$(PY) -m pytest -q -m "not system"

simulate: setup      ## the control-plane simulation, longer than in `make test` (fresh seeds; SEEDS=n runs n of them)
	S3SYNC_SIM_EXAMPLES=$${S3SYNC_SIM_EXAMPLES:-200} S3SYNC_SIM_STEPS=$${S3SYNC_SIM_STEPS:-120} \
	S3SYNC_SIM_FRESH=$${SEEDS:-4} $(PY) -m pytest -q -s -p no:cacheprovider tests/test_simulation.py -k fresh

lint: setup          ## ruff and mypy on the code, cfn-lint and checkov (own venv) on the templates: zero findings each
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(S3SYNC) lint templates
	bash .ci/checkov

templates: setup     ## re-render templates/ecs.yaml and templates/lambda.yaml
	$(S3SYNC) render --out templates

bench: setup         ## benchmarks side by side with rclone (not part of `make test`)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .venv-checkov build *.egg-info .pytest_cache .mypy_cache
