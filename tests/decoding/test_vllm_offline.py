"""The in-process vLLM engine without vLLM: one clear error that says how to install it or use a server."""

import sys

import pytest

from backtrack_trl.decoding.vllm_offline import VLLMOffline


def test_missing_vllm_names_the_ways_out(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `from vllm import LLM` raises ImportError
    with pytest.raises(
        ImportError, match="backend='vllm' without a server needs vLLM .*make vllm-env.*vllm_server_base"
    ):
        VLLMOffline("models/tiny")
