"""Live vecpress services for the tests: uvicorn on a free loopback port, in a thread of
the test process (so the compiled kernels are shared) or as a ``vecpress serve``
process that a test may kill."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, seconds: float = 120.0, process=None) -> None:
    """Wait until ``url``/health answers (a starting process compiles nothing, but
    imports take a few seconds on a busy runner)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become healthy in {seconds} s")


@contextlib.contextmanager
def threaded_server(app):
    """Serve ``app`` with uvicorn in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
        app.state.registry.close()


@contextlib.contextmanager
def served_process(root, *args: str):
    """``vecpress serve ROOT ARGS`` as a child process; yields ``(url, process)``."""
    port = free_port()
    cmd = [sys.executable, "-m", "vecpress.cli", "serve", str(root), "--port", str(port), *args]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    log = tempfile.TemporaryFile()  # not a pipe: a full pipe would stall the server
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process=proc)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
