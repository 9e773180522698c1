# The two commands a newcomer needs: `make run` and `make test` (README). Works as root or as a user.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_RUN  := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: run test lint bench bench-quick clean mosquitto rabbitmq chromium databases node

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

# Debian packages the suite needs, each installed when its check fails (the suite starts its own servers on
# free ports and never changes the machine's). $(call apt_install,CHECK,PACKAGES)
apt_install = $(1) || { echo "installing $(2) (Debian packages)"; \
	$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; }

# mosquitto: the MQTT tests' broker.
mosquitto:
	@$(call apt_install,command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ],mosquitto)

# rabbitmq-server: the AMQP and Cluster tests use the RabbitMQ on 127.0.0.1:5672 when it answers, else a
# node of their own on free ports (tests/support/rabbitmq.py).
rabbitmq:
	@$(call apt_install,command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ],rabbitmq-server)

# chromium and chromedriver: the console's browser test drives them headless through Selenium
# (tests/browser; docs/console.md says why Selenium).
chromium:
	@$(call apt_install,command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1,chromium chromium-driver)

# PostgreSQL and redis-server: the suite and the bench start their own servers on free ports (initdb +
# pg_ctl in a temporary directory; redis-server --port N) for what stops them.
databases:
	@$(call apt_install,ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && { command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; },postgresql redis-server)

# node: the bench's Node-RED flow is unit-tested by running its function in node (tests/unit/test_bench_nodered.py).
node:
	@$(call apt_install,command -v node >/dev/null 2>&1,nodejs)

lint: $(STAMP_TEST)
	$(BIN)/ruff check runtime tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python tools/core_any.py
	@if [ -f Dockerfile ]; then $(BIN)/hadolint Dockerfile; fi
	@if [ -f entrypoint.sh ]; then $(BIN)/shellcheck entrypoint.sh; fi

test: $(STAMP_TEST) mosquitto rabbitmq chromium databases node lint
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
