"""A real ``mlflow server`` for tests: free port on 127.0.0.1, stoppable and restartable.

Restarting keeps the port and the store, which is how tests simulate a tracking-server outage.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` with an SQLite store and proxied artifacts under ``store_dir``."""

    def __init__(self, store_dir: Path, port: int | None = None) -> None:
        self.store_dir = Path(store_dir).resolve()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.store_dir / 'mlflow.db'}",
            "--artifacts-destination", str(self.store_dir / "mlartifacts"),
            "--serve-artifacts", "--host", HOST, "--port", str(self.port), "--workers", "1",
        ]

    def start(self, timeout_s: float = 90.0) -> "MlflowServer":
        log = open(self.store_dir / "server.log", "ab")
        # No job runner and huey consumers (10 processes by default, 2 without): tests run on 2 cores.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        log.close()
        self._wait_healthy(timeout_s)
        return self

    def stop(self, hard: bool = False) -> None:
        """Stop the server's process group; ``hard`` kills it like a crash would."""
        if self.process is not None:
            stop_server(self.process, self.port, signal.SIGKILL if hard else signal.SIGTERM)

    def restart(self, timeout_s: float = 90.0) -> "MlflowServer":
        self.stop()
        return self.start(timeout_s)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.healthy():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.25)
        self.stop(hard=True)
        tail = (self.store_dir / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"mlflow server on {self.url} did not answer /health:\n{tail}")


def start_mlflow_server(tmp_path: Path, port: int | None = None) -> tuple[str, MlflowServer]:
    """Start a real tracking server storing under ``tmp_path``; return its URL and handle."""
    server = MlflowServer(Path(tmp_path), port).start()
    return server.url, server


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def stop_server(process: subprocess.Popen, port: int, sig: int = signal.SIGTERM) -> None:
    """Signal a server's process group, kill it after 15 s, and wait until its port is free."""
    _signal_group(process.pid, sig)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()
    _signal_group(process.pid, signal.SIGKILL)
    _wait_port_free(port)


def _wait_port_free(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) != 0:
                return
        time.sleep(0.1)


class ModelServer:
    """``mlflow models serve`` of a local pyfunc folder on 127.0.0.1, in idhhpc's environment
    (``--env-manager local``; ``serve`` starts the ``uvicorn`` found first on ``PATH``)."""

    def __init__(self, model_dir: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.model_dir, self.log_path = Path(model_dir), Path(log_path)
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                    "OMP_NUM_THREADS": "1", **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180.0) -> "ModelServer":
        command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(self.model_dir), "--env-manager",
                   "local", "-h", HOST, "-p", str(self.port), "-w", "1"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=self.env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow models serve on {self.url} did not answer /ping:\n"
                           f"{self.log_path.read_text(errors='replace')[-3000:]}")

    def invoke(self, payload: bytes) -> tuple[int, str]:
        """POST ``payload`` (JSON) to ``/invocations``: the status and the reply's text."""
        request = urllib.request.Request(f"{self.url}/invocations", data=payload,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def peak_rss_mib(self) -> float:
        """The largest high-water resident memory (VmHWM) among the server's processes."""
        peaks = []
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
                if os.getpgid(int(status.parent.name)) != self.process.pid:
                    continue
            except (OSError, ProcessLookupError):
                continue
            peaks += [int(line.split()[1]) / 1024 for line in text.splitlines() if line.startswith("VmHWM:")]
        return max(peaks, default=0.0)

    def stop(self) -> None:
        if self.process is not None:
            stop_server(self.process, self.port)
