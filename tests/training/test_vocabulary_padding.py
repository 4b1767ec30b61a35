"""Saved models decode greedily, a resized vocabulary is padded to a multiple of 64, and no decoder samples the
padding ids past the tokenizer."""

from __future__ import annotations

import pytest
import torch


def test_saved_generation_config_drops_the_base_models_sampling_defaults(tmp_path):
    from _decoding_utils import tiny_llama, tokenizer
    from transformers import GenerationConfig

    from backtrack_trl.training.model_loading import configure_generation

    model = tiny_llama(hidden_size=16, layers=1)
    # Llama-3.2's generation_config.json: do_sample true, temperature 0.6, top_p 0.9.
    model.generation_config.update(do_sample=True, temperature=0.6, top_p=0.9, top_k=20)
    configure_generation(model, tokenizer())
    model.generation_config.save_pretrained(tmp_path)
    saved = GenerationConfig.from_pretrained(tmp_path)
    assert saved.do_sample is False
    assert (saved.temperature, saved.top_p, saved.top_k) == (None, None, None)
    assert saved.eos_token_id == tokenizer().eos_token_id and saved.pad_token_id == tokenizer().pad_token_id


def test_training_pads_the_resized_vocabulary_to_a_multiple_of_64():
    from _decoding_utils import tiny_llama, tokenizer

    from backtrack_trl.training.model_loading import ensure_backtrack_token

    tok = tokenizer()
    model = tiny_llama(hidden_size=16, layers=1)
    model.resize_token_embeddings(len(tok) - 1)  # a base model without the <backtrack> row (like 128,256 + 1)
    old = model.get_input_embeddings().weight.detach().clone()
    ensure_backtrack_token(tok, model)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows % 64 == 0 and rows >= len(tok) and model.config.vocab_size == rows
    new = model.get_input_embeddings().weight
    assert torch.equal(new[: len(tok) - 1], old)
    assert torch.allclose(new[len(tok) - 1], old.mean(0))  # <backtrack> starts as the mean row


def _padded_model():
    """A tiny Llama whose vocabulary is padded to a multiple of 64 past the tokenizer, with the padding ids' logits
    far above every real token's (an untrained padding row can be anything)."""
    from _decoding_utils import BiasedLlama, tiny_llama, tokenizer

    tok = tokenizer()
    model = tiny_llama(hidden_size=16, layers=1)
    model.resize_token_embeddings(len(tok), pad_to_multiple_of=64)
    padded = BiasedLlama(model.config)
    padded.load_state_dict(model.state_dict())
    padded.generation_config = model.generation_config
    padded.logit_bias = torch.zeros(model.config.vocab_size)
    padded.logit_bias[len(tok) :] = 30.0
    return padded.eval(), tok


@pytest.mark.parametrize(
    "method, options",
    [("greedy", {}), ("self_backtracking", {"n": 2, "b": 1}), ("best_of_n", {"n": 2}), ("beam", {"n": 2}),
     ("released", {"n": 2, "b": 1})],
)  # fmt: skip
def test_decoders_never_emit_the_padding_ids_of_a_padded_vocabulary(method, options):
    from _decoding_utils import PROMPT_8

    from backtrack_trl.decoding import decode

    model, tok = _padded_model()
    assert model.config.vocab_size > len(tok)
    length = {"max_length": 40} if method == "released" else {"max_new_tokens": 8}
    result = decode(model, tok, [PROMPT_8], method=method, seed=1, **length, **options)[0]
    assert result.candidates
    for candidate in result.candidates:
        assert max(tok(candidate.text, add_special_tokens=False)["input_ids"], default=0) < len(tok)
        assert candidate.num_tokens > 0
