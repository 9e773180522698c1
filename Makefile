# The two commands a newcomer needs: `make run` and `make test` (README). Works as root or as a user.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_RUN  := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: run test lint bench bench-quick clean mosquitto rabbitmq chromium databases

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/nuviot-runtime run

# Debian's mosquitto, installed when missing (the suite starts its own broker on a free port).
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { \
	  echo "installing mosquitto (Debian package)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }

# Debian's rabbitmq-server, installed when missing, for the AMQP tests: they use the RabbitMQ on
# 127.0.0.1:5672 when it answers, else start a node of their own on free ports (tests/support/rabbitmq.py).
rabbitmq:
	@command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || { \
	  echo "installing rabbitmq-server (Debian package)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null; }
# Debian's chromium and its chromedriver, installed when missing: the console's browser test drives them
# headless through Selenium (tests/browser; docs/console.md says why Selenium).
chromium:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  echo "installing chromium and chromium-driver (Debian packages)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
# Debian's PostgreSQL and redis-server, installed when missing: the suite and the bench start their own
# servers on free ports (initdb + pg_ctl in a temporary directory; redis-server --port N), never the machine's.
databases:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && { command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; } || { \
	  echo "installing postgresql and redis-server (Debian packages)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null; }

lint: $(STAMP_TEST)
	$(BIN)/ruff check runtime tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python tools/core_any.py
	@if [ -f Dockerfile ]; then $(BIN)/hadolint Dockerfile; fi
	@if [ -f entrypoint.sh ]; then $(BIN)/shellcheck entrypoint.sh; fi

test: $(STAMP_TEST) mosquitto rabbitmq chromium databases lint
	$(BIN)/python -m pytest
	@IMAGE_TEST_OPTIONAL=1 $(MAKE) --no-print-directory image-test

bench: $(STAMP_TEST) mosquitto databases $(if $(findstring --cluster,$(BENCH_ARGS)),rabbitmq)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(STAMP_TEST) mosquitto databases
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info

# The container image test (tests/image, README "Container"): builds the image from the Dockerfile with
# Debian's podman (installed when missing) and runs it as its user. Where the machine cannot (not Linux,
# not root), it says why; `make test` then goes on. Cache (base, pip): $(IMAGE_CACHE).
.PHONY: image-test
IMAGE_CACHE ?= $(HOME)/.cache/nuviot-image
image-test: $(STAMP_TEST) mosquitto
	@NUVIOT_IMAGE_CACHE="$(IMAGE_CACHE)" sh tools/image/run-tests.sh $(BIN)/python $(IMAGE_TEST_ARGS)
