"""Starting a vLLM server: a server that dies at start is one clear error (vLLM missing: which Python to use;
otherwise its last log line and the log's path), and the process is reaped. (A real server is started in the slow
test_vllm_server.py.)"""

import pytest

from backtrack_trl.decoding.vllm_launch import launch_vllm_server
from backtrack_trl.errors import MissingDependencyError, ServerUnavailableError


def _fake_python(tmp_path, body: str):
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\n{body}\n")
    python.chmod(0o755)
    return str(python)


def test_a_python_without_vllm_says_which_environment_has_it(tmp_path):
    python = _fake_python(tmp_path, 'echo "$*"\necho "ModuleNotFoundError: No module named \'vllm\'"\nexit 1')
    log = tmp_path / "server.log"
    with pytest.raises(
        MissingDependencyError, match=r"vllm_python '.*python' has no vLLM: .*\.venv-vllm.*make vllm-env"
    ):
        with launch_vllm_server("models/tiny", python=python, port=5999, log_file=log, timeout=30):
            pass
    assert "--model models/tiny --host 127.0.0.1 --port 5999 --enable-prefix-caching" in log.read_text()


def test_a_server_that_exits_at_start_is_one_line_with_its_last_log_line(tmp_path):
    python = _fake_python(tmp_path, 'echo "loading"\necho "ValueError: bad --dtype"\nexit 3')
    log = tmp_path / "server.log"
    with pytest.raises(ServerUnavailableError) as error:
        with launch_vllm_server("models/tiny", python=python, port=5999, log_file=log, timeout=30):
            pass
    message = str(error.value)
    assert "\n" not in message and "exited with code 3" in message
    assert "'ValueError: bad --dtype'" in message and str(log) in message


def test_a_missing_python_names_the_option(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vllm_python '.*nowhere/python' cannot run .*make vllm-env"):
        with launch_vllm_server("models/tiny", python=str(tmp_path / "nowhere" / "python"), log_file=tmp_path / "l"):
            pass
