"""Start vLLM's OpenAI-compatible server for the length of a ``with`` block (the study starts one per round with
``vllm_serve: true``; the vLLM benchmark and tests start their own).

Usage:

```python
from backtrack_trl.decoding.vllm_launch import launch_vllm_server

with launch_vllm_server("results/sudoku-tiny/models/backtrack-sft", python=".venv-vllm/bin/python") as url:
    print(url)  # http://127.0.0.1:<free port>, answering /v1/models
```
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from backtrack_trl.errors import MissingDependencyError, ServerUnavailableError


@contextlib.contextmanager
def launch_vllm_server(
    model: str,
    python: str = sys.executable,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    log_file: str | Path | None = None,
    timeout: float = 900.0,
    env: dict | None = None,
):
    """Start vLLM's OpenAI-compatible server on ``model`` with ``python`` (an environment where vLLM is installed,
    e.g. ``.venv-vllm/bin/python``), wait until it answers, yield its base URL, stop it on exit.

    It runs ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` command of the CPU build fails on its own
    package name) with prefix caching on; ``extra_args`` go to the server (e.g. ``["--dtype", "float32"]``).

    ```python
    with launch_vllm_server("results/sudoku-tiny/models/backtrack-sft", python=".venv-vllm/bin/python") as url:
        decoder = SelfBacktrackingDecoder.from_pretrained(folder, vllm_server_base_url=url, task="sudoku")
    ```
    """
    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--enable-prefix-caching", *extra_args]  # fmt: skip
    log_path = Path(log_file) if log_file else Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        try:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )
        except (FileNotFoundError, PermissionError) as error:
            raise FileNotFoundError(
                f"vllm_python {python!r} cannot run ({error.strerror}): give the Python of an environment with vLLM, "
                "e.g. .venv-vllm/bin/python (`make vllm-env` builds it)."
            ) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise _exit_error(python, process.returncode, log_path)
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise ServerUnavailableError(
                    f"The vLLM server on {model} did not answer within {timeout:.0f} s: see its log {log_path}."
                )
            time.sleep(1.0)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _exit_error(python: str, code: int, log_path: Path) -> Exception:
    """The one-line error of a server that exited before answering: vLLM missing from ``python``'s environment, or
    the server's last log line and the log's path (a bad server argument, a model it cannot load, no memory)."""
    log = log_path.read_text(errors="replace")
    if "No module named 'vllm'" in log or 'No module named "vllm"' in log:
        return MissingDependencyError(
            f"vllm_python {python!r} has no vLLM: give the Python of an environment with vLLM, e.g. "
            ".venv-vllm/bin/python (`make vllm-env` builds it)."
        )
    last = next((line.strip() for line in reversed(log.splitlines()) if line.strip()), "")
    return ServerUnavailableError(
        f"The vLLM server exited with code {code} before answering (last line: {last[:300]!r}); full log: {log_path}."
    )
