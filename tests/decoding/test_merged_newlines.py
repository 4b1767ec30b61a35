"""Tokenizers that merge newlines into their neighbours (Llama-3: `\\n\\n`, `!\\n`, ` =\\n` are single tokens).

Rollback, tabu, the stopping criterion, the search engines and the collator's spans, with a byte-level BPE built
with Llama-3's pre-tokenizer regex (see ``_decoding_utils.llama3_style_tokenizer``), not only the character one.
"""

import pytest
import torch
from _decoding_utils import BT, GOAL, llama3_style_tokenizer
from _scripted_lm import ScriptedLM

from backtrack_trl.decoding import BacktrackStoppingCriteria, SelfBacktrackingDecoder
from backtrack_trl.decoding.engine import SamplingEngine
from backtrack_trl.decoding.search import rollback_cut
from backtrack_trl.decoding.tokens import TaskTokens
from backtrack_trl.tasks.countdown.format import Problem, format_prompt
from backtrack_trl.training.collator import IGNORE_INDEX, build_example


PROMPT = format_prompt(Problem((10, 8, 5), 10))
RIGHT = "10-8=2\n5*2=10\nGoal Reached!\n\n"  # the marker ends in one `!\n\n` token


def _ids(*pieces):
    """Token ids of each piece encoded on its own, concatenated (how a model may emit them)."""
    tok = llama3_style_tokenizer()
    return [i for piece in pieces for i in tok(piece, add_special_tokens=False)["input_ids"]]


def _texts(ids):
    tok = llama3_style_tokenizer()
    return [tok.decode([i]) for i in ids]


def test_the_tokenizer_merges_newlines_like_llama3():
    assert _texts(_ids("\n\n")) == ["\n\n"]
    assert _texts(_ids("Goal Reached!\n")) == ["Goal", " Reached", "!\n"]
    assert _texts(_ids("7+3 =\n")) == ["7", "+", "3", " =\n"]


@pytest.mark.parametrize(
    "wrong",
    [("2+5=7\n\n",), ("2+5=7\n", "\n"), ("2+5=7\n", "\n", "\n"), ("2+5 =\n",), ("2+5 =\n", "\n\n"), ("2+5",)],
    ids=["merged empty line", "separate empty line", "two empty lines", "merged ' =\\n'", "' =\\n' + '\\n\\n'",
         "mid-line"],
)  # fmt: skip
def test_rollback_removes_the_last_non_empty_line(wrong):
    tokens = TaskTokens.from_tokenizer(llama3_style_tokenizer())
    state = _ids("10-8=2\n")
    body = state + _ids(*wrong)
    assert rollback_cut(body, tokens.is_newline, tokens.is_blank) == len(state)
    assert rollback_cut(_ids(*wrong), tokens.is_newline, tokens.is_blank) == 0  # a single line: back to the root


def test_stopping_criterion_sees_the_goal_marker_through_merged_tokens():
    criteria = BacktrackStoppingCriteria.from_tokenizer(llama3_style_tokenizer())
    rows = ["10-8=2\nGoal Reached!", "10-8=2\nGoal Reached!\n", "10-8=2\nGoal Reached!\n\n", "10-8=2\nGoal Reached"]
    ids = [_ids(PROMPT, row) for row in rows]
    width = max(map(len, ids))
    batch = torch.tensor([[llama3_style_tokenizer().pad_token_id] * (width - len(row)) + row for row in ids])
    assert criteria(batch).tolist() == [True, True, True, False]
    assert criteria(torch.tensor([_ids(PROMPT, "10-8=2\n2+5=7\n\n", BT)])).tolist() == [True]


def _policy(prompt, lines):
    """10-8=2, then the wrong 2+5=7 followed by an empty line and <backtrack>, or the right 5*2=10 and the goal
    marker written with a newline after it (one `!\\n\\n` token)."""
    table = {
        (): {"10-8=2": 1.0},
        ("10-8=2",): {"2+5=7": 0.5, "5*2=10": 0.5},
        ("10-8=2", "2+5=7"): {"": 1.0},
        ("10-8=2", "2+5=7", ""): {BT: 1.0},
        ("10-8=2", "5*2=10"): {GOAL + "\n": 1.0},
    }
    return table.get(tuple(lines), {})  # anything else: EOS


@pytest.mark.parametrize("tabu", [False, True])
def test_search_rolls_back_past_empty_lines_and_stops_at_a_merged_goal_marker(monkeypatch, tabu):
    tok = llama3_style_tokenizer()
    states, sampled = [], []
    original = SamplingEngine.run

    def spy(self, prompts, expansions, n, keep_prefix=None):
        states.extend(tok.decode(e.state.tokens) for e in expansions)
        output = original(self, prompts, expansions, n, keep_prefix)
        sampled.append([tok.decode(s.tokens) for s in output.samples])
        return output

    monkeypatch.setattr(SamplingEngine, "run", spy)
    model = ScriptedLM.build(tok, _policy)
    decoder = SelfBacktrackingDecoder(model, tok, n=8, b=1, k=1, temperature=1.0, seed=0, tabu=tabu)
    result = decoder.solve([PROMPT])[0]
    assert states == ["", "10-8=2\n"]  # the rolled-back state holds no part of the wrong step
    goal = [c for c in result.candidates if c.reached_goal]
    assert [c.text for c in goal] == [RIGHT]
    assert result.completion == RIGHT
    assert any(text.endswith("\n" + BT) for text in sampled[0])  # round 0 did roll back: "2+5=7\n" "\n" <backtrack>
    assert len(sampled[1]) == 8 and all(text.startswith("10-8=2\n") for text in sampled[1])
    if tabu:  # the first token of the rolled-back step ("2") is banned at that state
        assert set(sampled[1]) == {RIGHT}
    else:
        assert any(text.startswith("10-8=2\n2+5=7") for text in sampled[1])


def test_beam_engine_stops_at_a_merged_goal_marker():
    tok = llama3_style_tokenizer()
    model = ScriptedLM.build(tok, _policy)
    result = SelfBacktrackingDecoder(model, tok, n=2, b=0, sampling="beam", temperature=0.0).solve([PROMPT])[0]
    assert result.completion == RIGHT and result.chosen.end_reason == "goal"


def test_collator_spans_are_exact_with_merged_newline_tokens():
    tok = llama3_style_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [BT]})
    row = {"prompt": PROMPT, "prefix": "10-8=2\n\n", "wrong_step": "2+5 =\n", "completion": "", "kind": "backtrack"}
    row["completion"] = row["prefix"] + row["wrong_step"] + BT
    example = build_example(row, tok)
    ids, labels = example["input_ids"], example["labels"]
    trained = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    masked = [i for i, label in zip(ids, labels) if label == IGNORE_INDEX]
    assert tok.decode(trained) == "10-8=2\n\n" + BT + tok.eos_token
    assert tok.decode(masked).endswith(PROMPT + "2+5 =\n")
    assert _texts(_ids("2+5 =\n"))[-1] == " =\n"  # the masked span is exactly the merged tokens of the wrong step
