"""The in-process vLLM engine without vLLM: one clear error that says which environment has it or how to use a
server, and a recipe prints it as one line."""

import sys

import pytest

from backtrack_trl.decoding.vllm_offline import VLLMOffline
from backtrack_trl.errors import run_recipe


def test_missing_vllm_names_the_ways_out(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `from vllm import LLM` raises ImportError
    with pytest.raises(ImportError, match=r"vLLM is not installed in this environment .*\.venv-vllm.*make vllm-env"):
        VLLMOffline("models/tiny")
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(lambda: VLLMOffline("models/tiny"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.startswith("error: backend=vllm without --vllm_server_base_url")
    assert err.count("\n") == 1 and "make vllm-serve" in err
