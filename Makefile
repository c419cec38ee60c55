# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Each does all of its own set-up: virtualenv, pip installs, Debian's Fashion-MNIST where run as root.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
JOBS ?= 2

.PHONY: setup demo test data browser bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[all,dev]"
	touch $(STAMP)

setup: $(STAMP)

data:
	@if [ ! -d $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)) || \
		echo "note: could not install Debian's dataset-fashion-mnist; the demo will try torchvision's download"; \
	fi

# Headless Chromium renders the HTML report and, driven by Playwright (the dev extra), the
# serve page in tests (skipped where it is absent).
browser:
	@if ! command -v chromium >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -q chromium >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) || \
		echo "note: could not install chromium; the browser tests will be skipped"; \
	fi

demo: setup data
	$(BIN)/lookalike demo --output demo_output

test: setup data browser
	$(BIN)/python -m pytest -n $(JOBS) -q

bench: setup
	$(BIN)/python benchmarks/embed_throughput.py
	$(BIN)/python benchmarks/search_speed.py
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) demo_output
