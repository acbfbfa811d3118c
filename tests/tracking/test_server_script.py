"""mlflow/server.sh starts a server that answers /health and writes a pid file; stop.sh ends it."""

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.mlflow_server import free_port

pytestmark = pytest.mark.mlflow
SCRIPTS = Path(__file__).resolve().parents[2] / "mlflow"


def test_server_script_starts_and_stop_script_stops(tmp_path):
    port = free_port()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHON": sys.executable}
    started = subprocess.run(
        [str(SCRIPTS / "server.sh"), "--store-dir", str(tmp_path), "--port", str(port)],
        env=env, capture_output=True, text=True, timeout=180,
    )
    try:
        assert started.returncode == 0, started.stderr
        assert (tmp_path / "server.pid").exists()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert response.status == 200
        assert (tmp_path / "mlflow.db").exists()
    finally:
        subprocess.run([str(SCRIPTS / "stop.sh"), "--store-dir", str(tmp_path)], env=env, timeout=60)
    assert not (tmp_path / "server.pid").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
