# kijkmee: two commands.
#   make run    set up and start kijkmee on this machine (https://127.0.0.1:8443)
#   make test   set up and run every test (installs Debian's chromium, coturn and testssl.sh if missing)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NETNS := $(shell if [ "$$(id -u)" = 0 ]; then echo "unshare --net"; else echo "unshare -rn"; fi)
DEBIAN_PACKAGES := chromium coturn testssl.sh libnss3-tools openssl iproute2 tcpdump redis-server socat
PYTEST_ARGS ?=

.PHONY: run test setup setup-test system-packages lint clean

run: setup
	$(BIN)/kijkmee serve

setup: $(VENV)/.installed client_web/node_modules/.package-lock.json

setup-test: $(VENV)/.installed-test client_web/node_modules/.package-lock.json system-packages

# turn_relay/_fastpath.c: pip install -e . compiles the relay's C fast path in place; rebuild it when it changes.
$(VENV)/.installed: pyproject.toml turn_relay/_fastpath.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[fast]'
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

client_web/node_modules/.package-lock.json: client_web/package.json client_web/package-lock.json
	cd client_web && npm ci --no-audit --no-fund --loglevel=error

# Debian packages the tests drive: installed only when one is missing (needs root, as on CI).
system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Two pytest runs: everything that may use the host's network (PostgreSQL, Redis, loopback servers),
# then browser and WebRTC media tests inside a fresh network namespace that has only loopback, so
# Chromium and aiortc cannot reach or gather any other interface.
test: setup-test
	$(BIN)/python -m pytest -m "not netns" $(PYTEST_ARGS)
	$(NETNS) sh -c 'ip link set lo up && exec $(BIN)/python -m pytest -m netns $(PYTEST_ARGS)'

# Refresh docs/screenshots from the browser tests that take them (make test leaves them alone).
.PHONY: screenshots
screenshots: setup-test
	$(NETNS) sh -c 'ip link set lo up && KIJKMEE_DOCS_SCREENSHOTS=1 exec $(BIN)/python -m pytest -m netns \
	  tests/e2e/test_browser_call.py tests/e2e/test_incall.py tests/e2e/test_prejoin.py tests/e2e/test_embed.py'

lint: setup-test
	$(BIN)/ruff check kijkmee signaling metadata_store turn_relay tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) client_web/node_modules

# 3-way call set-up time in Chromium (bench/call_setup), inside a loopback-only namespace.
.PHONY: bench-call-setup
bench-call-setup: setup-test
	$(NETNS) sh -c 'ip link set lo up && exec $(BIN)/python bench/call_setup/run.py'

# Our TURN relay against coturn, one core each (bench/relay_vs_coturn/README.md); ~10 min, --quick ~3 min:
#   make bench-relay BENCH_RELAY_ARGS=--quick
.PHONY: bench-relay
bench-relay: $(VENV)/.installed
	@command -v turnserver >/dev/null && command -v gcc >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends coturn gcc libc6-dev >/dev/null; }
	$(BIN)/python -m pip install --quiet -e '.[fast]'
	$(BIN)/python bench/relay_vs_coturn/run.py $(BENCH_RELAY_ARGS)

# The metadata store at 1,000,000 sessions on SQLite and PostgreSQL (127.0.0.1:5432, a database of its own,
# dropped after): lookup, controller export, retention sweep (bench/store/README.md); ~5 min. Smaller:
#   make bench-store BENCH_STORE_ARGS="--sessions 100000"
.PHONY: bench-store
bench-store: $(VENV)/.installed
	$(BIN)/python -m bench.store.run $(BENCH_STORE_ARGS)

# Signaling under load (bench/signaling_load/README.md): 10,000 participants held by one process, joins at
# 500/s, join rate of one node and of two on Redis + PostgreSQL (127.0.0.1:6379 / :5432), and the server's
# instructions per join under valgrind; ~12 min. Smoke run:
#   make bench-signaling BENCH_SIGNALING_ARGS=--quick
.PHONY: bench-signaling
bench-signaling: $(VENV)/.installed client_web/node_modules/.package-lock.json
	@command -v valgrind >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null; }
	ulimit -n $$(ulimit -Hn) && $(BIN)/python bench/signaling_load/run.py $(BENCH_SIGNALING_ARGS)
