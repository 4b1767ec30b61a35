"""Every decoder finds the goal marker through a merged "!\n" token, and beam on a trust_remote_code folder reaches
the stock generate."""

from __future__ import annotations

import pytest


def test_beam_decoder_on_a_remote_code_model_reaches_the_stock_generate(tmp_path):
    from _decoding_utils import PROMPT_8, tiny_llama, tokenizer
    from transformers import AutoModelForCausalLM

    from backtrack_trl.decoding import BeamSearchDecoder
    from backtrack_trl.decoding.custom_generate_writer import write_custom_generate
    from backtrack_trl.training.model_init import save_model_and_tokenizer

    tok, folder = tokenizer(), tmp_path / "model"
    save_model_and_tokenizer(tiny_llama(hidden_size=32, layers=1, biased=True), tok, folder)
    write_custom_generate(folder)
    remote = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert getattr(remote.generate, "__func__", None) is not type(remote).generate  # the folder's search
    plain = AutoModelForCausalLM.from_pretrained(folder)
    got = BeamSearchDecoder(remote, tok, n=3, max_new_tokens=12).solve([PROMPT_8])[0]  # was TypeError 'num_beams'
    expected = BeamSearchDecoder(plain, tok, n=3, max_new_tokens=12).solve([PROMPT_8])[0]
    assert got.completion and [c.text for c in got.candidates] == [c.text for c in expected.candidates]


def _runaway_policy(prompt, lines):
    """The marker is written as one line with a newline after it (one `!\\n\\n` token); a model that is not stopped
    there writes on ("Reached!" and <backtrack>), as the greedy run of the issue did."""
    from _decoding_utils import BT, GOAL

    table = {(): {"10-8=2": 1.0}, ("10-8=2",): {"5*2=10": 1.0}, ("10-8=2", "5*2=10"): {GOAL + "\n": 1.0}}
    return table.get(tuple(lines), {"Reached!": 0.6, BT: 0.4})


@pytest.mark.parametrize("method, options", [("greedy", {}), ("best_of_n", {"n": 2}), ("beam", {"n": 2})])
def test_every_decoder_stops_at_a_goal_marker_merged_with_its_newline(method, options):
    from _decoding_utils import llama3_style_tokenizer
    from _scripted_lm import ScriptedLM

    from backtrack_trl.decoding import decode
    from backtrack_trl.tasks.countdown.format import Problem, format_prompt

    tok = llama3_style_tokenizer()
    assert [tok.decode([i]) for i in tok("Goal Reached!\n\n", add_special_tokens=False)["input_ids"]][-1] == "!\n\n"
    model = ScriptedLM.build(tok, _runaway_policy)
    result = decode(model, tok, [format_prompt(Problem((10, 8, 5), 10))], method=method, max_new_tokens=40, **options)
    assert result[0].completion == "10-8=2\n5*2=10\nGoal Reached!\n\n" and result[0].chosen.end_reason == "goal"
    if method != "beam":  # the other beams are forced down impossible tokens (the scripted model has one path)
        assert {c.end_reason for c in result[0].candidates} == {"goal"}
