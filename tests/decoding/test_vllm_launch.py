"""Starting a vLLM server: a server that dies at start is one clear error with its log, and the process is reaped.
(A real server is started in the slow test_vllm_server.py.)"""

import pytest

from backtrack_trl.decoding.vllm_launch import launch_vllm_server


def test_a_server_that_exits_at_start_is_an_error_with_its_log(tmp_path):
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\necho "no module named vllm: $*"\nexit 3\n')
    python.chmod(0o755)
    log = tmp_path / "server.log"
    with pytest.raises(RuntimeError, match=r"exited with code 3 \(log .*server.log\):\nno module named vllm: -m "):
        with launch_vllm_server("models/tiny", python=str(python), port=5999, log_file=log, timeout=30):
            pass
    assert "--model models/tiny --host 127.0.0.1 --port 5999 --enable-prefix-caching" in log.read_text()
