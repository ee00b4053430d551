# Pixelis: two commands do everything on a fresh clone.
#   make demo   create .venv, install pinned dependencies, run the main job (writes runs/demo/; an existing
#               runs/demo is refused: `make demo DEMO_FLAGS=--overwrite` replaces it, DEMO_OUT=DIR writes elsewhere)
#   make test   create or update .venv when needed, run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo
DEMO_FLAGS ?=

.PHONY: demo test lock clean

# Reinstall only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pixelis demo --config configs/demo.yaml --out $(DEMO_OUT) $(DEMO_FLAGS)

test: $(STAMP)
	$(PY) -m pytest -q

# Refresh the lock from the current environment (torch stays pinned to the CPU wheel's version).
lock: $(STAMP)
	{ head -2 constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/'; } > constraints.tmp
	mv constraints.tmp constraints.txt

clean:
	rm -rf $(VENV) runs
