"""The container files: hadolint and shellcheck clean (in the suite, not only in `make lint`), and the
Dockerfile facts operators rely on (non-root, /data volume, ports, health check, exec-form entrypoint)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined, comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    last_from = max(i for i, (word, _) in enumerate(out) if word == "FROM")
    return out[last_from:]


@pytest.mark.parametrize(("tool", "target"), [
    ("hadolint", "Dockerfile"),
    ("shellcheck", "entrypoint.sh"),
    *(("shellcheck", str(p.relative_to(REPO))) for p in sorted((REPO / "tools" / "image").glob("*.sh"))),
])
def test_linter_is_clean(tool: str, target: str) -> None:
    exe = VENV_BIN / tool
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run `make test` (the test extras install it)")
    proc = subprocess.run([str(exe), target], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_final_stage_facts() -> None:
    final = dockerfile_instructions()
    words = [w for w, _ in final]
    base = final[0][1]
    assert re.match(r"python:\$\{PYTHON_VERSION\}-slim$|python:3\.1[12]-slim", base), base
    users = [arg for w, arg in final if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    volumes = [arg for w, arg in final if w == "VOLUME"]
    assert any("/data" in v for v in volumes)
    exposed = {p for w, arg in final if w == "EXPOSE" for p in arg.split()}
    assert {"8181", "8182"} <= exposed
    env = " ".join(arg for w, arg in final if w == "ENV")
    assert "NUVIOT_DATA_DIR=/data" in env
    health = next(arg for w, arg in final if w == "HEALTHCHECK")
    assert "/health" in health and "curl" not in health
    entry = next(arg for w, arg in final if w == "ENTRYPOINT")
    assert isinstance(json.loads(entry), list)  # exec form: the entrypoint (then the daemon) is PID 1
    assert words.index("USER") > words.index("RUN")  # installs as root, runs as the user


def test_multi_stage_builds_a_wheel() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, flags=re.M)) >= 2
    assert "pip wheel" in text


def test_entrypoint_execs_the_daemon() -> None:
    script = (REPO / "entrypoint.sh").read_text()
    assert script.startswith("#!/bin/sh\n")
    assert re.search(r'^exec "\$bin" run "\$@"$', script, flags=re.M)
    assert (REPO / "entrypoint.sh").stat().st_mode & 0o111


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines and "!runtime/" in lines and "!entrypoint.sh" in lines


def test_data_is_private() -> None:
    """/data is 0700 in the image and the entrypoint's umask makes every file the runtime writes 0600
    (tests/image checks both on the running image)."""
    final = dockerfile_instructions()
    run = " ".join(arg for w, arg in final if w == "RUN")
    assert "chmod 0700 /data" in run
    assert re.search(r"^umask 077$", (REPO / "entrypoint.sh").read_text(), flags=re.M)
