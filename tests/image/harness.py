"""Build the image from the Dockerfile with Debian's podman and run it as its user (``make image-test``).

* **Storage.** podman keeps its images, layers and build cache (the Dockerfile's pip cache mount) under
  ``NUVIOT_IMAGE_CACHE`` (default ``~/.cache/nuviot-image``), apart from the machine's own podman: a
  second run reuses the base, the apt layer and the downloaded wheels; ``rm -rf`` of that folder starts
  from nothing.
* **Base.** The official ``python:X-slim`` when a registry serves it; otherwise a stand-in made from
  Debian packages (``tools/image/standin.sh``) and imported under the name the Dockerfile's FROM uses.
  The stand-in is a test device, never a release path (README "Container").
* **Run.** ``podman run`` where the machine permits it; where it is refused, the image's file system
  (``podman create`` + ``podman mount``) runs under chroot as the image's user, with the image's
  environment, entrypoint, command and working directory, as PID 1 of new mount and PID namespaces
  (``tools/image/enter.sh``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools" / "image"
CACHE = Path(os.environ.get("NUVIOT_IMAGE_CACHE") or Path.home() / ".cache" / "nuviot-image")
TAG = "localhost/nuviot-runtime:image-test"
NAME_PREFIX = "nuviot-image-test-"
STANDIN_SUITE = "bookworm"  # Debian 12: python3 is 3.11
STANDIN_PYTHON = "3.11"
STANDIN_LABEL = "org.nuviot.test-standin"
CONTEXT_LABEL = "org.nuviot.test-context"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class Podman:
    """The podman CLI on the test's own storage under CACHE."""

    def __init__(self, cache: Path = CACHE) -> None:
        self.cache = cache
        for sub in ("storage", "run", "tmp"):
            (cache / sub).mkdir(parents=True, exist_ok=True)
        exe = shutil.which("podman")
        if exe is None:
            raise RuntimeError("podman is not installed (`make image-test` installs Debian's podman)")
        self.argv = [exe, "--root", str(cache / "storage"), "--runroot", str(cache / "run")]
        # buildah keeps `RUN --mount=type=cache` directories under TMPDIR: the pip cache stays in CACHE
        self.env = {**os.environ, "TMPDIR": str(cache / "tmp")}

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.argv, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc

    def exists(self, image: str) -> bool:
        return self("image", "exists", image, check=False).returncode == 0

    def inspect(self, image: str) -> dict[str, Any]:
        return json.loads(self("image", "inspect", image).stdout)[0]

    @contextlib.contextmanager
    def image_root(self, image: str) -> Iterator[Path]:
        """The image's file system, mounted read-only for the duration."""
        root = Path(self("image", "mount", image).stdout.strip())
        try:
            yield root
        finally:
            self("image", "umount", image, check=False)


@dataclass
class Image:
    tag: str
    base: str  # the FROM name used
    standin: bool  # True: the Debian stand-in base
    config: dict[str, Any]  # the image's Config (User, Env, Entrypoint, Cmd, WorkingDir, ...)
    size: int
    base_size: int
    build_seconds: float
    run_mode: str = "chroot"  # "podman" or "chroot"
    run_mode_reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env") or [])

    @property
    def user(self) -> str:
        return self.config.get("User") or "0"

    @property
    def healthcheck(self) -> list[str]:
        return list((self.config.get("Healthcheck") or {}).get("Test") or [])

    @property
    def volumes(self) -> list[str]:
        return sorted(self.config.get("Volumes") or {})

    @property
    def exposed(self) -> set[int]:
        return {int(p.split("/")[0]) for p in self.config.get("ExposedPorts") or {}}


def dockerfile_python_version() -> str:
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("ARG PYTHON_VERSION="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("Dockerfile has no ARG PYTHON_VERSION=")


def ensure_base(podman: Podman, log: list[str]) -> tuple[str, str, bool]:
    """(FROM name, PYTHON_VERSION build arg, is the stand-in): the official base if it can be had."""
    version = dockerfile_python_version()
    official = f"docker.io/library/python:{version}-slim"
    if podman.exists(official) and STANDIN_LABEL not in (podman.inspect(official)["Config"].get("Labels") or {}):
        return official, version, False
    try:
        pulled = podman("pull", "--quiet", official, check=False, timeout=300)
    except subprocess.TimeoutExpired:
        pulled = None
    if pulled is not None and pulled.returncode == 0:
        log.append(f"base: {official} (pulled)")
        return official, version, False
    why = (pulled.stderr.strip().splitlines() or ["no answer"])[-1] if pulled else "timed out"
    log.append(f"base: no registry serves {official} ({why[:200]}); using the Debian {STANDIN_SUITE} stand-in")
    standin = f"docker.io/library/python:{STANDIN_PYTHON}-slim"
    if not podman.exists(standin):
        tarball = subprocess.run(["sh", str(TOOLS / "standin.sh"), str(podman.cache), STANDIN_SUITE],
                                 capture_output=True, text=True, timeout=1200)
        if tarball.returncode != 0:
            raise RuntimeError(f"making the stand-in base failed:\n{tarball.stderr[-3000:]}")
        podman("import", "--change", f"LABEL {STANDIN_LABEL}=debian-{STANDIN_SUITE}",
               "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]',
               tarball.stdout.strip(), standin, timeout=600)
        Path(tarball.stdout.strip()).unlink()  # the imported image is the cache from now on
    return standin, STANDIN_PYTHON, True


def context_digest(base_id: str, version: str) -> str:
    """A digest of what the build sees: the Dockerfile, .dockerignore, the files it lets in, the base, the
    build argument. Outside CI an image of the same digest is reused (NUVIOT_IMAGE_REBUILD=1 builds anyway);
    CI always builds, so that a new release of a dependency or a Debian package is tried."""
    allowed = [line[1:].strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    digest = hashlib.sha256(f"{base_id}\n{version}\n".encode())
    files = [REPO / "Dockerfile", REPO / ".dockerignore"]
    for name in allowed:
        path = REPO / name
        files += sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    for f in files:
        if f.exists() and "__pycache__" not in f.parts and f.suffix != ".pyc":
            digest.update(f"{f.relative_to(REPO)}\n{f.stat().st_mode & 0o111}\n".encode())
            digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def build(podman: Podman, log: list[str]) -> Image:
    base, version, standin = ensure_base(podman, log)
    digest = context_digest(podman.inspect(base)["Id"], version)
    rebuild = os.environ.get("NUVIOT_IMAGE_REBUILD") == "1" or os.environ.get("CI", "") not in ("", "false", "0")
    if (not rebuild and podman.exists(TAG)
            and (podman.inspect(TAG)["Config"].get("Labels") or {}).get(CONTEXT_LABEL) == digest):
        log.append("image: the build context is unchanged since the last build: reused (NUVIOT_IMAGE_REBUILD=1 "
                   "rebuilds)")
        return _image(podman, base, standin, 0.0, log)
    started = time.monotonic()
    # No layer cache: podman 4.3 cannot `RUN --mount=type=bind,from=<stage>` when that stage came from its
    # cache (the stage's files are not found); a full build is quick with the pip cache mount.
    args = ["build", "--isolation", "chroot", "--format", "docker", "--no-cache", "--layers=false", "--pull=never",
            "--build-arg", f"PYTHON_VERSION={version}", "--label", f"{CONTEXT_LABEL}={digest}", "-t", TAG]
    if CA_BUNDLE.exists():  # the machine's trust store (a proxy's CA) for pip and apt inside the build
        args += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    proc = podman(*args, str(REPO), check=False, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"podman build failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}")
    seconds = time.monotonic() - started
    podman("image", "prune", "--force", check=False, timeout=300)  # the previous build's layers
    return _image(podman, base, standin, seconds, log)


def _image(podman: Podman, base: str, standin: bool, seconds: float, log: list[str]) -> Image:
    info = podman.inspect(TAG)
    config = {**info["Config"], "Healthcheck": info["Config"].get("Healthcheck") or info.get("Healthcheck")}
    return Image(tag=TAG, base=base, standin=standin, config=config, size=int(info["Size"]),
                 base_size=int(podman.inspect(base)["Size"]), build_seconds=seconds, notes=log)


def choose_run_mode(podman: Podman, image: Image) -> None:
    forced = os.environ.get("NUVIOT_IMAGE_RUN")
    if forced in ("podman", "chroot"):
        image.run_mode, image.run_mode_reason = forced, "NUVIOT_IMAGE_RUN"
        return
    probe = podman("run", "--rm", "--network", "host", "--entrypoint", "/bin/true", image.tag, check=False,
                   timeout=120)
    if probe.returncode == 0:
        image.run_mode, image.run_mode_reason = "podman", "podman run works here"
    else:
        errors = [line for line in probe.stderr.splitlines() if line.startswith("Error")] or ["refused"]
        image.run_mode, image.run_mode_reason = "chroot", f"podman run is refused here ({errors[-1][:160]})"


def remove_stale(podman: Podman) -> None:
    """Containers left by a test run that died (the name carries its pid) are unmounted and removed."""
    listed = podman("ps", "--all", "--format", "{{.Names}}", check=False).stdout.split()
    for name in listed:
        if not name.startswith(NAME_PREFIX):
            continue
        pid = name[len(NAME_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            podman("umount", name, check=False)
            podman("rm", "--force", "--volumes", name, check=False)
    podman("volume", "prune", "--force", check=False)  # volumes no container uses (this storage is the test's)


def proc_ids(pid: int) -> tuple[list[int], list[int], int]:
    """(uids, gids, effective capabilities) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return ([int(x) for x in fields["Uid"].split()], [int(x) for x in fields["Gid"].split()],
            int(fields["CapEff"].strip(), 16))


class Container:
    """One run of the image: `podman run`, or its file system under chroot (see the module doc)."""

    _counter = 0

    def __init__(self, podman: Podman, image: Image, env: dict[str, str] | None = None,
                 args: list[str] | None = None, files: dict[str, Path] | None = None,
                 hosts: dict[str, str] | None = None) -> None:
        Container._counter += 1
        self.podman, self.image = podman, image
        self.name = f"{NAME_PREFIX}{os.getpid()}-{Container._counter}"
        self.extra_env = env or {}
        self.args = args  # None: the image's CMD
        self.files = files or {}  # path in the container -> host file (read-only, like `-v f:/p:ro`)
        self.hosts = hosts or {}  # extra /etc/hosts names (`--add-host`; compose's service names)
        self.volume = Path(tempfile.mkdtemp(prefix="nuviot-image-volume-"))
        self.root: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1: int | None = None
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._threads: list[threading.Thread] = []
        self.exit_code: int | None = None
        self._guard: subprocess.Popen[bytes] | None = None

    # -- what the image says -------------------------------------------------------------------------
    @property
    def volume_target(self) -> str:
        return self.image.volumes[0]

    def _env(self) -> dict[str, str]:
        env = {**self.image.env, "HOSTNAME": self.name[:63], **self.extra_env}
        env.setdefault("HOME", "/root" if self.image.user.split(":")[0] in ("0", "root") else self.volume_target)
        return env

    def _command(self) -> list[str]:
        return [*(self.image.config.get("Entrypoint") or []),
                *(self.image.config.get("Cmd") or [] if self.args is None else self.args)]

    # -- start -----------------------------------------------------------------------------------------
    def start(self) -> Container:
        if self.image.run_mode == "podman":
            self._start_podman()
        else:
            self._start_chroot()
        for stream, sink in ((self.proc.stdout, self.lines), (self.proc.stderr, self.stderr)):  # type: ignore[union-attr]
            thread = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _start_chroot(self) -> None:
        self.podman("create", "--name", self.name, self.image.tag)
        self.root = Path(self.podman("mount", self.name).stdout.strip())
        # what an engine writes into each container: /etc/hosts (localhost and the added names)
        names = {"localhost": "127.0.0.1", **self.hosts}
        (self.root / "etc" / "hosts").write_text("".join(f"{ip}\t{name}\n" for name, ip in names.items()))
        for target, source in self.files.items():  # like a read-only bind mount of one file
            dest = self.root / target.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
            dest.chmod(0o444)
        # a new named volume starts as a copy of the image's directory: owner, mode and content
        image_dir = self.root / self.volume_target.lstrip("/")
        st = image_dir.stat()
        shutil.copytree(image_dir, self.volume, dirs_exist_ok=True)
        os.chown(self.volume, st.st_uid, st.st_gid)
        self.volume.chmod(st.st_mode & 0o7777)
        uid, _, gid = self.image.user.partition(":")
        workdir = self.image.config.get("WorkingDir") or "/"
        argv = [shutil.which("unshare") or "unshare", "--mount", "--pid", "--fork", "--propagation", "private",
                "sh", str(TOOLS / "enter.sh"), str(self.root), str(self.volume), self.volume_target,
                f"{uid}:{gid or uid}", workdir, *self._command()]
        self.proc = subprocess.Popen(argv, env=self._env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 10
        while self.pid1 is None and time.monotonic() < deadline:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            found = children.read_text().split() if children.exists() else []
            if found:
                self.pid1 = int(found[0])
            elif self.proc.poll() is not None:
                break
            else:
                time.sleep(0.02)
        if self.pid1 is None and self.proc.poll() is None:  # (an early exit is for the test to judge)
            raise RuntimeError("the container's PID 1 never started")
        if self.pid1 is not None:
            # If this test process dies (SIGKILL, no finalizer), the guard kills the container's PID 1, which
            # ends its namespace and mounts; the next run's remove_stale removes the container. (A parent-death
            # signal would not do: it is cleared when chroot --userspec changes the user.)
            guard = f"while kill -0 {os.getpid()} && kill -0 {self.pid1}; do sleep 1; done; kill -9 {self.pid1}"
            self._guard = subprocess.Popen(["sh", "-c", guard + " 2>/dev/null"], stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           start_new_session=True)

    def _start_podman(self) -> None:
        self.podman("volume", "create", self.name)  # a named volume: a copy of the image's /data on first use
        self.volume.rmdir()
        self.volume = Path(self.podman("volume", "inspect", "--format", "{{.Mountpoint}}", self.name).stdout.strip())
        argv = [*self.podman.argv, "run", "--name", self.name, "--network", "host",
                "-v", f"{self.name}:{self.volume_target}"]
        for key, value in {"HOSTNAME": self.name[:63], **self.extra_env}.items():
            argv += ["-e", f"{key}={value}"]
        for target, source in self.files.items():
            argv += ["-v", f"{source}:{target}:ro"]
        for name, ip in self.hosts.items():
            argv += ["--add-host", f"{name}:{ip}"]
        argv += [self.image.tag, *(self.args or [])]
        self.proc = subprocess.Popen(argv, env=self.podman.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 60
        while self.pid1 is None and time.monotonic() < deadline:
            got = self.podman("inspect", "--format", "{{.State.Pid}}", self.name, check=False)
            if got.returncode == 0 and got.stdout.strip() not in ("", "0"):
                self.pid1 = int(got.stdout.strip())
            else:
                time.sleep(0.1)
        if self.pid1 is None and self.proc.poll() is None:
            raise RuntimeError("podman run never started the container")

    @staticmethod
    def _pump(stream: Any, sink: list[str]) -> None:
        for raw in stream:
            sink.append(raw.decode(errors="replace").rstrip("\n"))

    # -- looking in --------------------------------------------------------------------------------------
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def processes(self) -> dict[int, str]:
        """pid -> command name of every process in the container's PID namespace (seen from the host)."""
        assert self.pid1 is not None
        ns = os.readlink(f"/proc/{self.pid1}/ns/pid")
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "ns" / "pid") == ns:
                        found[int(entry.name)] = (entry / "comm").read_text().strip()
                except OSError:
                    continue  # gone meanwhile
        return found

    def exec(self, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside the running container as the image's user, with the image's environment."""
        assert self.pid1 is not None
        if self.image.run_mode == "podman":
            return subprocess.run([*self.podman.argv, "exec", self.name, *argv], env=self.podman.env,
                                  capture_output=True, text=True, timeout=timeout)
        uid, _, gid = self.image.user.partition(":")
        cmd = [shutil.which("nsenter") or "nsenter", "--target", str(self.pid1), "--mount", "--pid", "--",
               "chroot", f"--userspec={uid}:{gid or uid}", str(self.root), "/bin/sh", "-c",
               'cd "$1" && shift && exec "$@"', "sh", self.image.config.get("WorkingDir") or "/", *argv]
        return subprocess.run(cmd, env=self._env(), capture_output=True, text=True, timeout=timeout)

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        """The image's HEALTHCHECK command, run inside the container as a container engine runs it."""
        test = self.image.healthcheck
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"no HEALTHCHECK command in the image: {test}"
        argv = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
        return self.exec(argv)

    # -- stop --------------------------------------------------------------------------------------------
    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM to the container's PID 1 (what `docker stop` sends); (exit code, seconds taken)."""
        assert self.proc is not None and self.pid1 is not None
        started = time.monotonic()
        if self.image.run_mode == "podman":
            self.podman("kill", "--signal", "TERM", self.name, check=False)
        else:
            os.kill(self.pid1, signal.SIGTERM)
        self.exit_code = self.proc.wait(timeout=timeout + 5)
        seconds = time.monotonic() - started
        for thread in self._threads:  # the last lines it wrote
            thread.join(5)
        return self.exit_code, seconds

    def close(self) -> None:
        """Whatever happened: kill what still runs, unmount, remove the container and the volume."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                if self.image.run_mode == "podman":
                    self.podman("kill", self.name, check=False)
                elif self.pid1 is not None:
                    try:
                        os.kill(self.pid1, signal.SIGKILL)  # ends the PID namespace and its mounts
                    except ProcessLookupError:
                        pass
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=15)
            for thread in self._threads:
                thread.join(5)
            for pipe in (self.proc.stdout, self.proc.stderr) if self.proc else ():
                if pipe is not None:
                    pipe.close()
        finally:
            if self._guard is not None:
                self._guard.kill()
                self._guard.wait(timeout=10)
            if self.root is not None:
                self.podman("umount", self.name, check=False)
            self.podman("rm", "--force", "--volumes", self.name, check=False)
            if self.image.run_mode == "podman":
                self.podman("volume", "rm", "--force", self.name, check=False)
            else:
                shutil.rmtree(self.volume, ignore_errors=True)

    def __enter__(self) -> Container:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def output(self) -> str:
        return "\n".join([*self.lines[-60:], "-- stderr --", *self.stderr[-30:]])
