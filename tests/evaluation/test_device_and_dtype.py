"""The evaluation's `cuda` means this process's own GPU, and its dtype option loads the weights in that dtype."""

from __future__ import annotations

import pytest
import torch


def test_evaluation_cuda_means_this_processs_own_gpu():
    from types import SimpleNamespace

    from backtrack_trl.evaluation.run import process_device

    state = SimpleNamespace(local_process_index=3, device="accelerate's")
    assert process_device("cuda", state) == "cuda:3"  # was cuda (= cuda:0) on every rank
    assert process_device("cuda:1", state) == "cuda:1" and process_device("cpu", state) == "cpu"
    assert process_device(None, state) == "accelerate's"


def test_evaluation_dtype_option_loads_the_weights_in_that_dtype(tmp_path):
    from _decoding_utils import tiny_llama, tokenizer

    from backtrack_trl.decoding.api import load_model_and_tokenizer, resolve_dtype
    from backtrack_trl.evaluation import EvaluationArguments
    from backtrack_trl.training.model_init import save_model_and_tokenizer

    assert EvaluationArguments(dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(ValueError, match="--dtype .fp8.: choose auto, bfloat16, float16 or float32"):
        EvaluationArguments(dtype="fp8")
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "cuda:0") == "auto"
    save_model_and_tokenizer(tiny_llama(hidden_size=16, layers=1), tokenizer(), tmp_path / "m")
    model, _ = load_model_and_tokenizer(str(tmp_path / "m"), device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
