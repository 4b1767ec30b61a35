"""The generate-compatible pieces (stopping criteria, budget and tabu processors) with plain model.generate."""

import torch
from _decoding_utils import BT, GOAL, PROMPT, PROMPT_8, scripted, tokenizer
from transformers import LogitsProcessorList, StoppingCriteriaList

from backtrack_trl.decoding import BacktrackBudgetLogitsProcessor, BacktrackStoppingCriteria, TabuLogitsProcessor
from backtrack_trl.decoding.processors import tabu_bans
from backtrack_trl.tasks.countdown.format import Problem, format_prompt


def _generate(model, prompts, **kwargs):
    tok = tokenizer()
    inputs = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    out = model.generate(**inputs, do_sample=False, max_new_tokens=40, pad_token_id=tok.pad_token_id, **kwargs)
    return inputs, out[:, inputs["input_ids"].shape[1] :]


def test_stopping_criteria_stop_rows_independently_and_pad_them():
    tok = tokenizer()
    prompt_bt = format_prompt(Problem((5, 3, 2), 9))

    def policy(prompt, lines):
        if prompt == PROMPT_8:
            return {"5+3=8": 1.0} if not lines else {GOAL: 1.0}
        if prompt == prompt_bt:
            return {"5-3=2": 1.0} if not lines else {BT: 1.0}
        return {(): {"5+3=8": 1.0}, ("5+3=8",): {"8*2=16": 1.0}}.get(tuple(lines), {GOAL: 1.0})

    model = scripted(policy=policy)
    criteria = BacktrackStoppingCriteria.from_tokenizer(tok)
    _, new = _generate(model, [PROMPT_8, PROMPT, prompt_bt], stopping_criteria=StoppingCriteriaList([criteria]))
    texts = [tok.decode(row, skip_special_tokens=False) for row in new]
    pad = tok.pad_token
    # Each row stops right after its own marker (no EOS is generated) and is padded while the others continue.
    assert texts[0] == "5+3=8\n" + GOAL + pad * 7
    assert texts[1] == "5+3=8\n8*2=16\n" + GOAL
    assert texts[2] == "5-3=2\n" + BT + pad * 7
    # Without the criterion, rows go on to EOS.
    _, plain = _generate(model, [PROMPT_8])
    assert tok.decode(plain[0], skip_special_tokens=False) == "5+3=8\n" + GOAL + tok.eos_token


def test_stopping_criteria_per_row_tensor_and_multi_token_goal():
    criteria = BacktrackStoppingCriteria(backtrack_token_id=9, eos_token_id=[2, 3], goal_token_ids=[7, 8])
    ids = torch.tensor([[1, 5, 7, 8], [1, 7, 8, 5], [1, 5, 5, 9], [1, 5, 5, 3], [1, 8, 7, 5]])
    done = criteria(ids, None)
    assert done.dtype == torch.bool and done.shape == (5,)
    assert done.tolist() == [True, False, True, True, False]
    assert criteria.eos_token_id == [2, 3]  # the attribute that makes generate pad finished rows
    keep_going = BacktrackStoppingCriteria(9, 2, [7, 8], stop_on_backtrack=False)
    assert keep_going(ids, None).tolist() == [True, False, False, False, False]


def test_budget_processor_forbids_backtrack_once_spent():
    tok = tokenizer()
    bt = tok.convert_tokens_to_ids(BT)
    model = scripted({(): {BT: 0.9, "5+3=8": 0.1}})
    prompts = [PROMPT_8, PROMPT_8]
    _, free = _generate(model, prompts)
    assert tok.decode(free[0]).startswith(BT)
    budget = BacktrackBudgetLogitsProcessor(bt, max_backtracks=1, used=torch.tensor([0, 1]))
    _, out = _generate(model, prompts, logits_processor=LogitsProcessorList([budget]))
    texts = [tok.decode(row, skip_special_tokens=False) for row in out]
    assert texts[0].startswith(BT)  # budget left: the model may still backtrack
    assert texts[1].startswith("5+3=8\n" + GOAL)  # budget spent: <backtrack> is forbidden
    never = BacktrackBudgetLogitsProcessor(bt, max_backtracks=0)
    _, out = _generate(model, prompts[:1], logits_processor=LogitsProcessorList([never]))
    assert BT not in tok.decode(out[0], skip_special_tokens=False)


def test_budget_processor_counts_backtracks_in_the_row():
    processor = BacktrackBudgetLogitsProcessor(backtrack_token_id=4, max_backtracks=2, start=1)
    ids = torch.tensor([[4, 4, 1], [1, 4, 4], [1, 4, 1]])  # the first column is before `start`
    scores = processor(ids, torch.zeros(3, 6))
    assert torch.isinf(scores[:, 4]).tolist() == [False, True, False]


def test_tabu_forbids_the_start_of_the_rolled_back_step():
    tok = tokenizer()
    model = scripted({(): {"5+3=8": 0.5, "5+2=7": 0.3, "3+2=5": 0.2}})
    inputs, out = _generate(model, [PROMPT_8])
    assert tok.decode(out[0]).startswith("5+3=8\n")
    wrong = tok("5+3=8\n", add_special_tokens=False)["input_ids"]
    start = inputs["input_ids"].shape[1]
    # k = 1: lines starting with "5" are forbidden -> the model writes its next choice that starts differently.
    tabu = TabuLogitsProcessor([[wrong]], start=start, tabu_tokens=1)
    _, out = _generate(model, [PROMPT_8], logits_processor=LogitsProcessorList([tabu]))
    assert tok.decode(out[0]).startswith("3+2=5\n")
    # k = 3: only lines starting with "5+3" are forbidden -> "5+2=7" is allowed.
    tabu = TabuLogitsProcessor([[wrong]], start=start, tabu_tokens=3)
    _, out = _generate(model, [PROMPT_8], logits_processor=LogitsProcessorList([tabu]))
    assert tok.decode(out[0]).startswith("5+2=7\n")


def test_tabu_bans_are_exactly_the_matching_prefixes():
    generated = torch.tensor([[5, 6], [5, 7], [1, 6]])
    forbidden = [[[5, 6, 8, 9]], [[5, 6, 8, 9]], [[5, 6, 8], [1, 6, 2]]]
    # Position 2 with k=3: ban token 2 of each forbidden step whose first two tokens were just generated.
    assert tabu_bans(generated, forbidden, tabu_tokens=3) == [(0, 8), (2, 2)]
    assert tabu_bans(generated, forbidden, tabu_tokens=2) == []  # past the tabu prefix: nothing is banned
    assert tabu_bans(generated[:, :0], forbidden, tabu_tokens=1) == [(0, 5), (1, 5), (2, 5), (2, 1)]
    assert tabu_bans(generated[:, :0], forbidden, tabu_tokens=3) == []  # k=3 bans nothing at the first position
    # A step shorter than k is forbidden as a whole: its last token is banned after the rest.
    assert tabu_bans(generated[:, :1], [[[5, 6]], [], []], tabu_tokens=3) == [(0, 6)]
