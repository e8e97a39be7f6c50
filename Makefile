# Shortcuts for the README's commands.  Each target creates .venv on first use.
PY := .venv/bin/python

.PHONY: demo test bench conformance clean

.venv/bin/python:
	python3 -m venv .venv

demo: $(PY)
	.venv/bin/pip install -q -e . && .venv/bin/flowgrad demo

test: $(PY)
	.venv/bin/pip install -q -e '.[dev]' && $(PY) -m pytest

bench: $(PY)
	.venv/bin/pip install -q -e '.[bench]'
	$(PY) benchmarks/bench_core.py

clean:
	rm -rf .venv out .pytest_cache *.egg-info
