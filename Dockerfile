# syntax=docker/dockerfile:1
# nuviot-runtime container image (README "Container").
#   docker build -t nuviot-runtime .
#   docker run -d -p 8181:8181 -p 8182:8182 -p 8180:8180 -v nuviot-data:/data nuviot-runtime
# Stage 1 builds wheels of the project and of its dependencies (the ranges pinned in pyproject.toml);
# stage 2 installs them into a venv (then removes pip and setuptools from it: nothing installs at run time), with
# no compiler, no pip or apt cache and no source tree. The build stage's pip cache is a cache mount (kept
# by the builder between builds, never part of a layer). `make image-test` builds and runs this file.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime ./runtime
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    NUVIOT_DATA_DIR=/data \
    NUVIOT_LOG_FORMAT=json
# Debian's mosquitto serves the built-in MQTT listener (listenerType mqttlistener) as a child process.
RUN apt-get update \
    && apt-get install -y --no-install-recommends mosquitto=2.0.* \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/nuviot_runtime-*.whl \
    && /opt/venv/bin/pip uninstall --yes --no-cache-dir pip setuptools \
    && groupadd --system --gid 10001 nuviot \
    && useradd --system --uid 10001 --gid nuviot --home-dir /data --no-create-home --shell /usr/sbin/nologin nuviot \
    && mkdir -p /data \
    && chown nuviot:nuviot /data \
    && chmod 0700 /data
COPY --chmod=0755 entrypoint.sh /usr/local/bin/entrypoint.sh
# SQLite database, admin token, last good solution, cloud quarantine file: the directory is 0700 and
# the entrypoint's umask 077 makes every file in it 0600
VOLUME ["/data"]
USER 10001:10001
WORKDIR /data
# admin API, input commands; listener ports come from the solution and are published by the operator
EXPOSE 8181 8182
# No curl in a slim image: ask /health with the image's Python.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request as u; p=os.environ.get('NUVIOT_ADMIN_PORT') or '8181'; sys.exit(0 if u.urlopen('http://127.0.0.1:'+p+'/health', timeout=3).status == 200 else 1)"]
# The entrypoint execs the daemon: it is PID 1 and gets SIGTERM (drain, exit 0 within 10 s). Its only
# possible child, mosquitto for an mqttlistener, is stopped by the daemon and dies with it
# (PR_SET_PDEATHSIG), so no init (tini) is needed; `docker run --init` adds one if wanted.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD []
