"""Baselines (greedy, beam, best-of-N) and the released-style decoder against planted policies; every decoder on a
real tiny random Llama."""

import pytest
from _decoding_utils import BT, GOAL, PROMPT, PROMPT_8, scripted, tiny_llama, tokenizer

from backtrack_trl.decoding import (
    BeamSearchDecoder,
    BestOfNDecoder,
    GreedyDecoder,
    ReleasedSelfBacktrackingDecoder,
    SearchResult,
    SelfBacktrackingDecoder,
    decode,
)


def test_greedy_follows_the_most_likely_path():
    model = scripted({(): {"5+3=8": 0.4, "4+4=8": 0.6}})
    result = GreedyDecoder(model, tokenizer()).solve([PROMPT_8])[0]
    assert result.completion == "4+4=8\n" + GOAL
    assert len(result.candidates) == 1 and result.tokens_generated == 7


def test_beam_search_returns_the_most_likely_sequence_first():
    # Greedy takes "5" (0.55) but the best full sequence starts with "4": beam search finds it.
    model = scripted(
        {(): {"5+3=8": 0.3, "5-3=2": 0.25, "4+4=8": 0.45}, ("5-3=2",): {BT: 1.0}}  # fmt: skip
    )
    assert GreedyDecoder(model, tokenizer()).solve([PROMPT_8])[0].completion.startswith("5+3=8")
    result = BeamSearchDecoder(model, tokenizer(), n=3).solve([PROMPT_8])[0]
    assert result.completion == "4+4=8\n" + GOAL
    assert {c.text for c in result.candidates} >= {"4+4=8\n" + GOAL, "5+3=8\n" + GOAL, "5-3=2\n" + BT}


def test_best_of_n_and_forbidding_backtrack():
    model = scripted({(): {"5-3=2": 0.7, "5+3=8": 0.3}, ("5-3=2",): {BT: 0.6, "2*4=8": 0.4}})
    result = BestOfNDecoder(model, tokenizer(), n=16, temperature=1.0).solve([PROMPT_8])[0]
    assert any(c.end_reason == "backtrack" for c in result.candidates)
    forbidden = BestOfNDecoder(model, tokenizer(), n=16, temperature=1.0, forbid_backtrack=True)
    result = forbidden.solve([PROMPT_8])[0]
    assert all(BT not in c.text for c in result.candidates)
    assert result.goal_candidates


PLANTED = {
    # the only answer; the other first step is vetoed with <backtrack>
    "filter": {(): {"5+3=8": 0.5, "5-3=2": 0.5}, ("5-3=2",): {BT: 1.0}},
    # the answer needs a second step that is found after rolling back a wrong one
    "rollback": {
        (): {"5-3=2": 1.0},
        ("5-3=2",): {"2*8=16": 0.3, "2+2=4": 0.7},
        ("5-3=2", "2+2=4"): {"4*4=16": 1.0},
        ("5-3=2", "2+2=4", "4*4=16"): {BT: 1.0},
    },
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_released_style_decoder_agrees_with_the_search(case):
    table = PLANTED[case]
    ours = SelfBacktrackingDecoder(scripted(table), tokenizer(), n=8, b=1, k="released", duplicates="sum")
    released = ReleasedSelfBacktrackingDecoder(scripted(table), tokenizer(), n=8, b=1, max_length=64)
    expected = {"filter": "5+3=8\n" + GOAL, "rollback": "5-3=2\n2*8=16\n" + GOAL}[case]
    assert ours.solve([PROMPT])[0].completion == expected
    result = released.solve([PROMPT])[0]
    assert result.completion == expected
    assert result.forward_passes > 0 and result.tokens_generated > 0


def test_released_style_decoder_rolls_back_in_text_and_tracks_visited_states():
    table = {(): {"5-3=2": 1.0}, ("5-3=2",): {"2+2=4": 1.0}, ("5-3=2", "2+2=4"): {BT: 1.0}}
    released = ReleasedSelfBacktrackingDecoder(scripted(table), tokenizer(), n=4, b=3, max_length=64)
    ours = SelfBacktrackingDecoder(scripted(table), tokenizer(), n=4, b=3, k="released")
    released_result, our_result = released.solve([PROMPT])[0], ours.solve([PROMPT])[0]
    assert released_result.rollbacks == our_result.rollbacks == 1  # "5-3=2\n" once; then it is visited
    assert not released_result.candidates  # nothing reaches the goal: the first output of the last call
    assert released_result.completion == "5-3=2\n2+2=4\n" + BT


def test_every_decoder_runs_on_a_tiny_random_llama():
    model = tiny_llama(hidden_size=32, layers=2, biased=True)
    prompts = [PROMPT, PROMPT_8]
    settings = [
        ("greedy", {"max_new_tokens": 16}),
        ("beam", {"n": 3, "max_new_tokens": 16}),
        ("best_of_n", {"n": 4, "max_new_tokens": 16}),
        ("self_backtracking", {"n": 4, "b": 1, "max_new_tokens": 16}),
        ("self_backtracking", {"n": 3, "b": 1, "sampling": "beam", "tabu": True, "max_new_tokens": 16}),
        ("self_backtracking", {"n": 4, "b": 2, "selection": "combined", "max_backtracks": 1, "max_new_tokens": 16}),
        ("released", {"n": 3, "b": 1, "max_length": 40}),
    ]
    for method, options in settings:
        results = decode(model, tokenizer(), prompts, method=method, **options)
        assert len(results) == 2 and all(isinstance(r, SearchResult) for r in results)
        for result in results:
            assert result.method == method and result.wall_time > 0 and result.forward_passes > 0
            assert "</s>" not in result.completion and "<pad>" not in result.completion


def _four_dead_ends():
    """Four equally likely first lines, each followed by a wrong line and <backtrack>: every rollback is a new state."""
    firsts = ["1+1=2", "2+2=4", "3+3=6", "4+4=8"]
    table = {(): dict.fromkeys(firsts, 0.25)}
    for first in firsts:
        table[(first,)] = {"9*9=81": 1.0}
        table[(first, "9*9=81")] = {BT: 1.0}
    return table


@pytest.mark.parametrize(("options", "k"), [({}, 2), ({"k": "paper"}, 2), ({"k": "sqrt_b"}, 1), ({"k": 4}, 4)])
def test_released_decoder_re_expands_floor_sqrt_n_states_and_samples_with_top_k_50(monkeypatch, options, k):
    # The released code: self.n = int(np.sqrt(k)) with k = N, and a generate call without top_k (transformers' 50).
    import backtrack_trl.decoding.released as released_module

    calls = []
    stock = released_module.stock_generate
    monkeypatch.setattr(released_module, "stock_generate", lambda model, **kw: calls.append(kw) or stock(model, **kw))
    decoder = ReleasedSelfBacktrackingDecoder(
        scripted(_four_dead_ends()), tokenizer(), n=4, b=1, max_length=64, **options
    )
    assert decoder.k == k and decoder.top_k == 50
    result = decoder.solve([PROMPT])[0]
    assert result.rollbacks == k and len(calls) == 1 + k  # the root, then the k rolled-back states
    assert all(call["top_k"] == 50 and call["num_beams"] == 4 for call in calls)
    assert (ReleasedSelfBacktrackingDecoder(scripted({}), tokenizer(), n=32).k, decoder.top_k) == (5, 50)
    off = ReleasedSelfBacktrackingDecoder(scripted(_four_dead_ends()), tokenizer(), n=4, b=0, top_k=0, max_length=64)
    calls.clear()
    off.solve([PROMPT])
    assert calls[0]["top_k"] is None  # 0 turns the filter off (None for generate; its default would be 50)


def test_released_decoder_raises_generate_errors_instead_of_skipping_the_state(monkeypatch):
    # An error inside generate (here: a broken model; before, e.g. a folder's custom generate re-entered) must not
    # turn into an empty answer.
    import backtrack_trl.decoding.released as released_module

    def broken(model, **kwargs):
        raise RuntimeError("generate failed")

    monkeypatch.setattr(released_module, "stock_generate", broken)
    decoder = ReleasedSelfBacktrackingDecoder(scripted({}), tokenizer(), n=2, b=1, max_length=64)
    with pytest.raises(RuntimeError, match="generate failed"):
        decoder.solve([PROMPT])
    with pytest.raises(ValueError, match="max_length=10 counts the prompt too"):
        ReleasedSelfBacktrackingDecoder(scripted({}), tokenizer(), n=2, b=1, max_length=10).solve([PROMPT])
