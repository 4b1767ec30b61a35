"""The self-backtracking search with scripted models: rollback, K, b, visited set, selection, KV reuse."""

import math

import pytest
import torch
from _decoding_utils import BT, GOAL, PROMPT, PROMPT_8, good_bad_policy, scripted, tiny_llama, tokenizer

from backtrack_trl.decoding import SelfBacktrackingDecoder
from backtrack_trl.decoding.engine import SamplingEngine
from backtrack_trl.decoding.sampling import row_uniforms, sample_from_scores
from backtrack_trl.decoding.search import resolve_k, rollback_cut
from backtrack_trl.decoding.selection import RawSample, aggregate_samples, rescore, select_index
from backtrack_trl.tasks.countdown.format import Problem, format_prompt


def _spy(monkeypatch):
    """Record every engine call: (texts of the expanded states, finished samples)."""
    calls = []
    original = SamplingEngine.run

    def run(self, prompts, expansions, n, keep_prefix=None):
        output = original(self, prompts, expansions, n, keep_prefix)
        tok = tokenizer()
        states = [tok.decode(e.state.tokens) for e in expansions]
        calls.append((states, sorted(output.samples, key=lambda s: (s.expansion, s.sample))))
        return output

    monkeypatch.setattr(SamplingEngine, "run", run)
    return calls


def test_rollback_cut_removes_exactly_the_last_line():
    newline = 0

    def is_newline(token):
        return token == newline

    assert rollback_cut([5, 6, 0, 7, 8, 0], is_newline) == 3  # "ab\ncd\n" -> "ab\n"
    assert rollback_cut([5, 6, 0, 7, 8], is_newline) == 3  # <backtrack> mid-line: the partial line goes
    assert rollback_cut([5, 6, 0], is_newline) == 0  # a single line: back to the root
    assert rollback_cut([], is_newline) == 0


def test_rollback_keeps_the_prefix_and_visited_states_are_not_expanded_again(monkeypatch):
    calls = _spy(monkeypatch)
    model = scripted(
        {
            (): {"5-3=2": 1.0},
            ("5-3=2",): {"2*2=4": 0.5, "2+2=4": 0.5},
            ("5-3=2", "2*2=4"): {BT: 1.0},
            ("5-3=2", "2+2=4"): {BT: 1.0},
        }  # fmt: skip
    )
    decoder = SelfBacktrackingDecoder(model, tokenizer(), n=4, b=3, k=4, temperature=1.0)
    result = decoder.solve([PROMPT])[0]
    # Round 0 rolls back to "5-3=2\n" (the last line removed); round 1 rolls back to it again: visited, so no
    # round 2 even though b = 3.
    assert [states for states, _ in calls] == [[""], ["5-3=2\n"]]
    assert result.rollbacks == 1
    for sample in calls[1][1]:
        text = tokenizer().decode(sample.tokens)
        assert text.startswith("5-3=2\n") and text.count("\n") == 2 and text.endswith(BT)
    assert {c.round for c in result.candidates} == {0, 1}
    assert not result.goal_candidates and result.chosen_index is not None  # fallback output


@pytest.mark.parametrize(("k", "expected"), [(1, 1), (2, 2), ("paper", 4), ("released", 4), ("sqrt_b", 1), (3, 3)])
def test_k_states_re_expanded_per_round_in_sample_order(monkeypatch, k, expected):
    calls = _spy(monkeypatch)
    firsts = ["1+1=2", "2+2=4", "3+3=6", "4+4=8"]
    table = {(): dict.fromkeys(firsts, 0.25)}
    for first in firsts:
        table[(first,)] = {"9*9=81": 1.0}
        table[(first, "9*9=81")] = {BT: 1.0}
    decoder = SelfBacktrackingDecoder(scripted(table), tokenizer(), n=16, b=1, k=k, temperature=1.0, seed=0)
    result = decoder.solve([PROMPT])[0]
    round0 = [tokenizer().decode(s.tokens) for s in calls[0][1]]
    distinct_in_order = list(dict.fromkeys(text.split("\n")[0] + "\n" for text in round0))
    assert len(distinct_in_order) == 4  # the seed gives all four first lines
    assert result.rollbacks == expected
    assert calls[1][0] == distinct_in_order[:expected]


def test_b_rounds_and_k_bound_every_round(monkeypatch):
    for b in (0, 1, 2, 3):
        calls = _spy(monkeypatch)
        decoder = SelfBacktrackingDecoder(scripted(policy=good_bad_policy(depth=6)), tokenizer(), n=8, b=b, k=2)
        result = decoder.solve([PROMPT])[0]
        assert len(calls) == b + 1  # each rollback lands on a deeper new state: every round runs
        assert all(len(states) <= 2 for states, _ in calls)
        assert calls[-1][1] and max(c.round for c in result.candidates) <= b
        assert result.rollbacks == sum(len(states) for states, _ in calls[1:])
        monkeypatch.undo()


def test_rows_stop_early_and_counters_add_up():
    model = scripted({(): {"5+3=8": 0.5, "5-3=2": 0.5}, ("5-3=2",): {BT: 1.0}})
    decoder = SelfBacktrackingDecoder(model, tokenizer(), n=8, b=0, max_new_tokens=64)
    result = decoder.solve([PROMPT_8])[0]
    # "5+3=8\nGoal Reached!" is 7 tokens and "5-3=2\n<backtrack>" too: 1 prefill + 7 steps, far below 64.
    assert result.forward_passes == 8
    assert result.tokens_generated == 8 * 7 == sum(c.count * c.num_tokens for c in result.candidates)
    assert result.completion == "5+3=8\n" + GOAL


def test_likelihood_selection_picks_the_planted_best():
    model = scripted({(): {"5+3=8": 0.3, "4+4=8": 0.7}})
    result = SelfBacktrackingDecoder(model, tokenizer(), n=16, b=0, temperature=1.0).solve([PROMPT_8])[0]
    by_text = {c.text: c for c in result.candidates}
    assert set(by_text) == {"5+3=8\n" + GOAL, "4+4=8\n" + GOAL}
    # Only the first token is uncertain: mean log-prob = log p(first) / 7 tokens.
    assert by_text["4+4=8\n" + GOAL].mean_logprob == pytest.approx(math.log(0.7) / 7, abs=1e-5)
    assert by_text["5+3=8\n" + GOAL].mean_logprob == pytest.approx(math.log(0.3) / 7, abs=1e-5)
    assert result.completion == "4+4=8\n" + GOAL


def test_backtrack_value_picks_the_answer_the_model_would_not_retract():
    # A confident forgery (higher likelihood) after which the model often wants to backtrack, vs the right answer.
    table = {
        (): {"9+9=8": 0.8, "4+4=8": 0.2},
        ("9+9=8",): {GOAL: 0.6, BT: 0.4},
        ("4+4=8",): {GOAL: 0.99, BT: 0.01},
    }
    chosen = {}
    for rule in ("likelihood", "backtrack_value", "combined"):
        decoder = SelfBacktrackingDecoder(scripted(table), tokenizer(), n=16, b=0, temperature=1.0, selection=rule)
        result = decoder.solve([PROMPT_8])[0]
        chosen[rule] = result.completion
        values = {c.text: c.backtrack_value for c in result.goal_candidates}
        assert values["9+9=8\n" + GOAL] == pytest.approx(math.log(0.6), abs=1e-5)
        assert values["4+4=8\n" + GOAL] == pytest.approx(math.log(0.99), abs=1e-5)
    assert chosen == {
        "likelihood": "9+9=8\n" + GOAL,
        "backtrack_value": "4+4=8\n" + GOAL,
        "combined": "4+4=8\n" + GOAL,
    }


def test_duplicate_aggregation_rules():
    samples = [
        RawSample("a", "goal", -0.2, 0.0, 5),
        RawSample("a", "goal", -0.2, 0.0, 5),
        RawSample("a", "goal", -0.2, 0.0, 5),
        RawSample("b", "goal", -0.5, 0.0, 5),
        RawSample("c", "backtrack", -0.01, 0.0, 5),
    ]
    summed = aggregate_samples(samples, duplicates="sum")
    assert [c.count for c in summed] == [3, 1, 1]
    # The released rule sums negative scores: the answer found three times loses to the one found once.
    assert summed[select_index(summed)].text == "b"
    for rule in ("mean", "max"):
        candidates = aggregate_samples(samples, duplicates=rule)
        assert candidates[select_index(candidates)].text == "a"  # never a non-goal output, however likely


def test_vote_picks_the_answer_most_samples_reach_over_a_likelier_one():
    samples = [
        RawSample("right", "goal", -0.9, 0.0, 5),
        RawSample("right", "goal", -0.8, 0.0, 5),
        RawSample("forged", "goal", -0.1, 0.0, 5),
        RawSample("other", "goal", -0.3, 0.0, 5),
        RawSample("other", "goal", -0.3, 0.0, 5),
        RawSample("gave up", "backtrack", -0.01, 0.0, 5),
        RawSample("gave up", "backtrack", -0.01, 0.0, 5),
        RawSample("gave up", "backtrack", -0.01, 0.0, 5),
    ]
    for duplicates in ("sum", "mean", "max"):  # vote ignores the aggregation of scores
        candidates = aggregate_samples(samples, rule="vote", duplicates=duplicates)
        assert [c.score for c in candidates] == [2.0, 1.0, 2.0, 3.0]
        # two answers with 2 votes: the likelier one wins the tie; 3 votes that never reached the goal do not count
        assert candidates[select_index(candidates)].text == "other"
        assert rescore(candidates, "vote", duplicates) == [2.0, 1.0, 2.0, 3.0]
    likely = aggregate_samples(samples, rule="likelihood")
    assert likely[select_index(likely)].text == "forged"
    model = scripted({(): {"5+3=8": 0.45, "4+4=8": 0.25, "6+2=8": 0.3}})
    decoder = SelfBacktrackingDecoder(model, tokenizer(), n=32, b=0, temperature=1.0, selection="vote", seed=0)
    result = decoder.solve([PROMPT_8])[0]
    chosen = next(c for c in result.goal_candidates if c.text == result.completion)
    assert chosen.count == max(c.count for c in result.goal_candidates) > 1


@pytest.mark.parametrize("tabu", [False, True])
def test_kv_cache_search_equals_re_encoding_search_scripted(tabu):
    prompts = [PROMPT, PROMPT_8, format_prompt(Problem((7, 1, 1, 4), 11))]
    results = {}
    for reuse in (True, False):
        decoder = SelfBacktrackingDecoder(
            scripted(policy=good_bad_policy(depth=4)), tokenizer(), n=6, b=3, k=2, tabu=tabu, reuse_cache=reuse
        )
        results[reuse] = [r.to_dict() for r in decoder.solve(prompts)]
        for r in results[reuse]:
            r.pop("wall_time")
            r.pop("forward_passes")  # re-encoding adds a prefill per round
    assert results[True] == results[False]
    assert sum(r["rollbacks"] for r in results[True]) > 3


def test_kv_cache_search_equals_re_encoding_search_tiny_llama():
    model = tiny_llama(biased=True)
    prompts = [PROMPT, PROMPT_8, format_prompt(Problem((12, 7, 1), 84))]
    outputs = {}
    for reuse in (True, False):
        decoder = SelfBacktrackingDecoder(model, tokenizer(), n=6, b=2, k=3, max_new_tokens=24, reuse_cache=reuse)
        outputs[reuse] = decoder.solve(prompts)
    assert sum(r.rollbacks for r in outputs[True]) >= 2  # the planted bias makes the model roll back
    for cached, encoded in zip(outputs[True], outputs[False]):
        assert cached.completion == encoded.completion
        assert [c.text for c in cached.candidates] == [c.text for c in encoded.candidates]
        assert [c.mean_logprob for c in cached.candidates] == pytest.approx(
            [c.mean_logprob for c in encoded.candidates], abs=1e-4
        )


def test_results_do_not_depend_on_the_batch():
    prompts = [PROMPT, PROMPT_8, format_prompt(Problem((7, 1, 1, 4), 11))]
    decoder = SelfBacktrackingDecoder(scripted(policy=good_bad_policy(depth=3)), tokenizer(), n=5, b=2, k=2)
    together = decoder.solve(prompts, seeds=[10, 11, 12])
    alone = decoder.solve(prompts[1:2], seeds=[11])
    assert together[1].completion == alone[0].completion
    assert [c.to_dict() for c in together[1].candidates] == [c.to_dict() for c in alone[0].candidates]


def test_resolve_k_and_sampler():
    # "released" is the released code's rule, floor(sqrt N) like the paper's; floor(sqrt b) is "sqrt_b"
    assert (resolve_k("paper", 32, 1), resolve_k("released", 32, 1), resolve_k("released", 8, 4)) == (5, 5, 2)
    assert (resolve_k("sqrt_b", 32, 1), resolve_k("sqrt_b", 8, 4), resolve_k("sqrt_b", 8, 0)) == (1, 2, 1)
    keys = torch.tensor([[7, 0, 0, i] for i in range(20000)])
    uniforms = row_uniforms(keys, step=3)
    assert torch.equal(uniforms, row_uniforms(keys, step=3)) and 0 < uniforms.min() and uniforms.max() < 1
    assert not torch.equal(uniforms, row_uniforms(keys, step=4))
    scores = torch.log(torch.tensor([0.5, 0.3, 0.2, 0.0])).expand(20000, 4)
    counts = torch.bincount(sample_from_scores(scores, uniforms), minlength=4) / 20000
    assert counts.tolist() == pytest.approx([0.5, 0.3, 0.2, 0.0], abs=0.015)
