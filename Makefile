# Two entry points: `make demo` and `make test`. Both set up the .venv first (idempotent).
PY := .venv/bin/python

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m motionstream demo

test: setup
	$(PY) -m pytest -q tests

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .venv .pytest_cache runs out
