# Batchlab: two commands.
#   make run   - create .venv, install requirements.txt, start the dashboard and its engine server
#                (a child process; demo models built in). BATCHLAB_ENGINE_URL=... attaches to another.
#   make test  - create .venv, install requirements-dev.txt (+ Debian's chromium when root), run all tests
# Extras: make notebooks (Jupyter Lab on notebooks/), make serve (the engine behind the Open Inference Protocol), make bench (benchmarks, installs requirements-bench.txt), make regress BASE=rev (this tree vs a commit), make screenshots (README images), make mlserver-env (MLServer, a peer server, in .venv-mlserver), make clean.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
SERVE_PORT ?= 8000
ADDRESS ?= 127.0.0.1
# Host names the dashboard answers to: on loopback, this machine's own (.streamlit/config.toml:
# a page whose name is pointed at 127.0.0.1 is refused); beyond loopback every name, the
# dashboard asking each browser for its password (HOSTS="box.lan 10.0.0.5" to list them).
HOSTS ?= $(if $(filter 127.0.0.1 localhost ::1,$(ADDRESS)),,*)
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: run serve notebooks test bench regress screenshots browser mlserver-env clean

$(VENV)/.run-installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -r requirements.txt
	@touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -r requirements-dev.txt
	@touch $@ $(VENV)/.run-installed

$(VENV)/.notebooks-installed: requirements.txt requirements-notebooks.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -r requirements-notebooks.txt
	@touch $@ $(VENV)/.run-installed

$(VENV)/.bench-installed: requirements.txt requirements-dev.txt requirements-bench.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -r requirements-bench.txt
	@touch $@ $(VENV)/.dev-installed $(VENV)/.run-installed

# MLServer in a virtualenv of its own (its pins clash with ours): a real peer server that the
# tests and benchmarks start on loopback (core/peers/mlserver.py).
.venv-mlserver/.installed: requirements-mlserver.txt
	@test -x .venv-mlserver/bin/python || $(PYTHON) -m venv .venv-mlserver
	.venv-mlserver/bin/python -m pip install $(PIP_FLAGS) -r requirements-mlserver.txt
	@touch $@

mlserver-env: .venv-mlserver/.installed

run: $(VENV)/.run-installed
	$(PY) -m streamlit run app.py --server.address=$(ADDRESS) --server.port=$(PORT) \
		$(foreach h,$(HOSTS),'--server.allowedHosts=$(h)')

# The notebooks in Jupyter Lab (installs it into .venv the first time).
notebooks: $(VENV)/.notebooks-installed
	$(PY) -m jupyter lab --notebook-dir=notebooks --ServerApp.ip=$(ADDRESS) \
		$$([ "$$(id -u)" = 0 ] && echo --allow-root)

# The engine alone (Open Inference Protocol, model repository, /metrics, control API) on loopback,
# its models and settings kept in data/serve-state across restarts.
serve: $(VENV)/.run-installed
	$(PY) -m core.server --host $(ADDRESS) --port $(SERVE_PORT) --state-dir data/serve-state

# Debian's chromium for the real-browser tests (Playwright cannot download its own here).
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium for the browser tests..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium is missing and this is not root: browser tests will be skipped" \
		     "(install it with: sudo apt-get install chromium)"; \
	fi

test: $(VENV)/.dev-installed .venv-mlserver/.installed browser
	$(PY) -m pytest

# Run on an idle machine (docs/benchmarks.md); ~30 minutes.
bench: $(VENV)/.bench-installed .venv-mlserver/.installed browser
	$(PY) -m benchmarks.engine_overhead
	$(PY) -m benchmarks.peers
	$(PY) -m benchmarks.polling
	$(PY) -m benchmarks.overload
	$(PY) -m benchmarks.bombs
	$(PY) -m benchmarks.oip_route
	$(PY) -m benchmarks.observer
	$(PY) -m benchmarks.whatif
	$(PY) -m benchmarks.tracing
	$(PY) -m benchmarks.servers

# This tree against a baseline commit, side by side (a change to the request path comes with
# this ratio: docs/benchmarks.md). BASE defaults to HEAD (uncommitted changes vs the last commit).
BASE ?= HEAD
regress: $(VENV)/.dev-installed
	$(PY) -m benchmarks.regress --baseline $(BASE)

# Refresh the README's screenshots (made by the browser test).
screenshots: $(VENV)/.dev-installed browser
	BATCHLAB_SCREENSHOTS=docs/img $(PY) -m pytest tests/test_browser.py -k live_traffic

clean:
	rm -rf $(VENV) .venv-mlserver .pytest_cache .hypothesis
