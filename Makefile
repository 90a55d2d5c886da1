# Commands: `make demo`, `make test` (every test) and `make test-quick` (all but those marked slow: the end-to-end
# and subprocess-heavy ones). Each sets up everything on a fresh machine first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-quick setup system-deps clean

# wheel: tests/test_packaging.py builds the project's wheel offline, without isolation, with this venv's own
# setuptools (left as the venv ships it: tensorflow-hub still imports pkg_resources, which setuptools >= 81 lacks).
$(STAMP): pyproject.toml setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Headless Chromium renders the HTML report in the browser test.
system-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

demo: setup
	$(VENV)/bin/vugan phantom --out data/phantom --patients 24 --seed 7
	$(VENV)/bin/vugan run --config configs/demo.toml --manifest data/phantom/scans.csv --force-release

# Every test; the 25 slowest are listed at the end, to keep an eye on what the tiers cost.
test: setup system-deps
	$(PY) -m pytest -q -p no:cacheprovider --durations=25

# The quick tier, for the edit-test loop: under 4 minutes on 2 idle cores.
test-quick: setup system-deps
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

clean:
	rm -rf $(VENV) runs data
