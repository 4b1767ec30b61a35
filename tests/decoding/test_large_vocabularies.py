"""Decoding at GPU scale, run on CPU: beam's generate calls are capped to a logits budget, the blocked sampler and
top-p of large vocabularies match the exact ones, the engine reads the device rarely, the device is picked right,
and the released decoder ignores a model's sampling defaults."""

from __future__ import annotations

import pytest
import torch


def test_beam_generate_calls_are_capped_so_their_logits_fit_the_budget(monkeypatch):
    from _decoding_utils import PROMPT, PROMPT_8, scripted, tokenizer

    from backtrack_trl.decoding import BeamSearchDecoder, beam
    from backtrack_trl.decoding.beam import beam_rows_per_call

    # Llama-3's vocabulary, beam:n=16, 64 steps: 8 problems (128 rows, 4.2 GB of logits) per call, not 64 (34 GB).
    assert beam_rows_per_call(16, 64, 128_320) == 128
    assert beam_rows_per_call(16, 64, 128_320, budget=1) == 16  # never less than one problem
    rows, original = [], beam.stock_generate
    monkeypatch.setattr(
        beam, "stock_generate", lambda model, **kw: rows.append(len(kw["input_ids"])) or original(model, **kw)
    )
    model, prompts = scripted({}), [PROMPT, PROMPT_8] * 3
    decoder = BeamSearchDecoder(model, tokenizer(), n=2, max_new_tokens=8, batch_size=6)
    expected = decoder.solve(prompts)
    assert rows == [6]
    rows.clear()
    decoder.engine.logits_budget_bytes = 2 * 2 * 8 * len(tokenizer()) * 4  # two problems of 2 beams, 8 steps
    got = decoder.solve(prompts)
    assert rows == [2, 2, 2]
    assert [[c.to_dict() for c in r.candidates] for r in got] == [
        [c.to_dict() for c in r.candidates] for r in expected
    ]


def test_beam_default_batch_follows_the_number_of_beams():
    from _decoding_utils import scripted, tokenizer

    from backtrack_trl.decoding import BeamSearchDecoder

    assert BeamSearchDecoder(scripted({}), tokenizer(), n=16).batch_size == 16
    assert BeamSearchDecoder(scripted({}), tokenizer(), n=64).batch_size == 4


def test_blocked_sampler_of_large_vocabularies_matches_the_distribution_and_keeps_the_tail():
    from backtrack_trl.decoding.sampling import EXACT_VOCAB, sample_from_scores

    vocab = 9_003  # above EXACT_VOCAB, not a multiple of the block
    assert vocab > EXACT_VOCAB
    probs = torch.zeros(vocab, dtype=torch.float64)
    heavy = {0: 0.3, 257: 0.25, 4_999: 0.2, vocab - 1: 0.149}
    for token, p in heavy.items():
        probs[token] = p
    tail = torch.arange(5_000, 8_000)  # 3,000 tokens of 0.1% together
    probs[tail] = 0.001 / len(tail)
    probs[1:257] = 0.1 / 256
    probs /= probs.sum()
    scores = torch.where(probs > 0, probs.log(), torch.full_like(probs, -float("inf"))).float()
    draws = 20_000
    uniforms = (torch.arange(draws, dtype=torch.float64) + 0.5) / draws  # stratified: counts are nearly exact
    tokens = torch.cat([sample_from_scores(scores.expand(1_000, vocab), u) for u in uniforms.split(1_000)])
    counts = torch.bincount(tokens, minlength=vocab).double() / draws
    assert counts[probs == 0].sum() == 0  # zero-mass ids (and the padded block) are never drawn
    for token in heavy:
        assert abs(counts[token] - probs[token]) < 1e-4
    assert abs(counts[tail].sum() - probs[tail].sum()) < 1e-4


def test_small_vocabularies_keep_the_float64_sampler_bit_for_bit():
    from backtrack_trl.decoding.sampling import row_uniforms, sample_from_scores

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 110, generator=generator)
    uniforms = row_uniforms(torch.arange(64)[:, None], step=3)
    probs = torch.softmax(scores.double(), -1)
    cdf = probs.cumsum(-1)
    expected = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None], right=True).squeeze(-1)
    assert torch.equal(sample_from_scores(scores, uniforms), expected)


def test_engine_reads_the_device_once_or_twice_per_step_not_per_finished_row(monkeypatch):
    import sys

    from _decoding_utils import PROMPT, PROMPT_8, tiny_llama, tokenizer

    from backtrack_trl.decoding import BestOfNDecoder

    reads = []
    for name in ("tolist", "item", "__bool__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            if sys._getframe(1).f_code.co_filename.endswith("engine.py"):
                reads.append(1)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    decoder = BestOfNDecoder(tiny_llama(hidden_size=16, layers=1, biased=True), tokenizer(), n=16, max_new_tokens=12)
    results = decoder.solve([PROMPT, PROMPT_8])
    monkeypatch.undo()
    steps = max(r.forward_passes for r in results) - 1  # minus the prefill
    finished = sum(len(r.candidates) for r in results)
    assert finished >= 16  # many rows finished (one host read per finished row would exceed the bound)
    assert len(reads) <= 3 * steps + 8, (len(reads), steps)


@pytest.mark.parametrize("top_p, spread", [(0.9, 3.0), (0.5, 1.0), (0.95, 0.01)], ids=["peaked", "medium", "flat"])
def test_top_p_of_large_vocabularies_keeps_the_same_tokens_as_the_sort(top_p, spread):
    from transformers import TopPLogitsWarper

    from backtrack_trl.decoding.sampling import EXACT_VOCAB, warp_scores

    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(8, EXACT_VOCAB + 1000, generator=generator) * spread  # "flat": the sort fallback
    expected = TopPLogitsWarper(top_p)(None, scores.clone())
    got = warp_scores(scores, top_p=top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    assert torch.equal(got[~torch.isinf(got)], scores[~torch.isinf(got)])


def test_decoder_from_pretrained_picks_the_gpu_when_there_is_one(monkeypatch):
    from backtrack_trl.decoding import SelfBacktrackingDecoder, api

    asked = []

    def load(path, device=None, dtype=None, option="--model_name_or_path"):
        asked.append(device)
        raise RuntimeError("stop here")  # only the device matters

    monkeypatch.setattr(api, "load_model_and_tokenizer", load)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for device in ("auto", None, "cpu"):
        with pytest.raises(RuntimeError, match="stop here"):
            SelfBacktrackingDecoder.from_pretrained("folder", device=device)
    with pytest.raises(RuntimeError, match="stop here"):
        SelfBacktrackingDecoder.from_pretrained("folder")
    assert asked == ["cuda", "cuda", "cpu", "cuda"]  # was None: the model stayed on CPU on a GPU machine


def test_released_decoder_ignores_the_models_sampling_defaults():
    from _decoding_utils import PROMPT, PROMPT_8, tiny_llama, tokenizer

    from backtrack_trl.decoding import ReleasedSelfBacktrackingDecoder

    model, options = tiny_llama(hidden_size=32, layers=1, biased=True), {"n": 3, "b": 1, "max_length": 40, "seed": 7}
    expected = ReleasedSelfBacktrackingDecoder(model, tokenizer(), **options).solve([PROMPT, PROMPT_8])
    model.generation_config.update(do_sample=True, temperature=0.6, top_p=0.5, min_p=0.3)  # a base model's defaults
    got = ReleasedSelfBacktrackingDecoder(model, tokenizer(), **options).solve([PROMPT, PROMPT_8])
    assert [[c.text for c in r.candidates] for r in got] == [[c.text for c in r.candidates] for r in expected]
