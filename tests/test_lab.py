"""Smoke test for ``make lab``: JupyterLab starts on loopback and serves the notebooks.

It starts a real ``jupyter lab`` server from this environment, bound to 127.0.0.1 on a free port with a
random token and with its config and runtime folders in ``tmp_path`` (so the user's ``~/.jupyter`` is never
read or written), then talks to it only through its REST API:

* ``/api/status`` answers, with the token;
* ``/api/contents/00_tiny_world.ipynb`` comes back as a JSON notebook whose first cell is the papermill
  ``parameters`` code cell and which has no outputs (notebooks are committed stripped);
* the root listing holds every ``NN_name.ipynb`` in ``notebooks/``, i.e. the server's root is that folder;
* ``/lab`` serves the JupyterLab HTML page (the frontend assets are installed);
* a request without the token is refused (the server is not open to anyone who can reach the port).

The server is always stopped at the end, whatever happens. No kernel is started and no network is needed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_DIR = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_DIR / "notebooks"
NOTEBOOK_NAME = re.compile(r"^\d\d_\w+\.ipynb$")
START_DEADLINE_S = 60.0

# An opener that ignores http_proxy/https_proxy: a proxy in the environment must not see loopback traffic.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class LabServer:
    """A running JupyterLab server: where it listens and the token it accepts."""

    base_url: str
    token: str

    def request(self, path: str, *, token: bool = True, timeout: float = 10.0) -> tuple[int, str, bytes]:
        """GET ``path``; return (status, content type, body) for any HTTP status, error ones included."""
        headers = {"Authorization": f"token {self.token}"} if token else {}
        req = urllib.request.Request(self.base_url + path, headers=headers)
        try:
            with _OPENER.open(req, timeout=timeout) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Content-Type", ""), err.read()

    def get_json(self, path: str) -> Any:
        """GET ``path`` with the token and decode its JSON body, failing on any status but 200."""
        status, _, body = self.request(path)
        assert status == 200, f"GET {path} answered {status}: {body[:500]!r}"
        return json.loads(body)


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (port_retries=0 makes a lost race fail loudly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _jupyter_command() -> list[str]:
    """The ``jupyter lab`` of the environment running the tests, not whichever one is first on PATH."""
    jupyter = Path(sys.executable).parent / "jupyter"
    return [str(jupyter), "lab"] if jupyter.exists() else [sys.executable, "-m", "jupyterlab"]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server (SIGTERM shuts Jupyter down cleanly), killing it if it does not exit."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """Start ``jupyter lab`` on the notebooks folder, wait until it answers, and stop it afterwards."""
    home = tmp_path_factory.mktemp("jupyter")
    port = _free_port()
    token = secrets.token_hex(24)
    # Variables that would point the server at the user's own config, settings or token.
    inherited = (
        "JUPYTER_TOKEN",
        "JUPYTER_CONFIG_PATH",
        "JUPYTERLAB_SETTINGS_DIR",
        "JUPYTERLAB_WORKSPACES_DIR",
    )
    env = {key: value for key, value in os.environ.items() if key not in inherited}
    env.update(
        JUPYTER_CONFIG_DIR=str(home / "config"),  # also holds lab settings and workspaces
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),  # server info files, cookie secret
        # Reading a notebook writes the notebook-signing key and signature database here. The user's
        # kernelspecs (also here) are not needed: no kernel is started.
        JUPYTER_DATA_DIR=str(home / "data"),
    )
    command = [
        *_jupyter_command(),
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={NOTEBOOK_DIR}",
        # The server fetches nothing at start-up, but the frontend asks it for news, a newer release and
        # PyPI's extension list; turning these off keeps the server offline whatever loads the page.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI often run as root; Jupyter refuses that otherwise
    # A file, not a pipe: nobody reads the server's output while it runs, and a full pipe would block it.
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_DIR, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    server = LabServer(base_url=f"http://127.0.0.1:{port}", token=token)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"jupyter lab exited with {process.returncode} before answering:\n{log_path.read_text()}"
                )
            try:
                if server.request("/api/status", timeout=2.0)[0] == 200:
                    break
            except OSError:  # not listening yet (connection refused, reset or timed out)
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"jupyter lab did not answer /api/status within {START_DEADLINE_S:.0f} s:\n"
                    f"{log_path.read_text()}"
                )
            time.sleep(0.25)
        yield server
    finally:
        _stop(process)


def test_lab_serves_the_tiny_world_notebook(lab_server: LabServer) -> None:
    model = lab_server.get_json("/api/contents/00_tiny_world.ipynb?content=1")
    assert model["type"] == "notebook"
    assert model["format"] == "json"
    cells = model["content"]["cells"]
    first = cells[0]
    assert first["cell_type"] == "code"
    assert "parameters" in first["metadata"].get("tags", [])
    with_outputs = [i for i, cell in enumerate(cells) if cell.get("outputs")]
    assert with_outputs == [], f"cells {with_outputs} have outputs; run `make strip`"


def test_lab_root_is_the_notebooks_folder(lab_server: LabServer) -> None:
    expected = {path.name for path in NOTEBOOK_DIR.iterdir() if NOTEBOOK_NAME.match(path.name)}
    assert expected, f"no NN_name.ipynb notebooks in {NOTEBOOK_DIR}"
    root = lab_server.get_json("/api/contents")
    assert root["type"] == "directory"
    listed = {item["name"]: item["type"] for item in root["content"]}
    missing = sorted(expected - listed.keys())
    assert missing == [], f"notebooks missing from the server's root listing: {missing}"
    assert all(listed[name] == "notebook" for name in expected)


def test_lab_serves_the_jupyterlab_page(lab_server: LabServer) -> None:
    status, content_type, body = lab_server.request("/lab")
    assert status == 200
    assert content_type.startswith("text/html")
    assert b"<html" in body.lower()
    assert b"jupyter-config-data" in body  # the page JupyterLab's frontend boots from, not an error page


def test_lab_refuses_requests_without_the_token(lab_server: LabServer) -> None:
    status, _, _ = lab_server.request("/api/contents", token=False)
    assert status in (401, 403)
