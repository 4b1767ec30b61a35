"""GRPO rollouts from our decoders (training/rollouts.py): TRL's rollout dict on a planted model, seeds, the search's
``search_value``, the options' checks, and short GRPO runs with ``--rollout engine`` and ``--rollout search``."""

import json
from types import SimpleNamespace

import pytest
from _decoding_utils import BT, GOAL, scripted, tokenizer
from test_grpo import _args, folders  # noqa: F401 (the module fixture: a tiny dataset and model)

from backtrack_trl.decoding.engine import SamplingEngine
from backtrack_trl.decoding.engine_io import Expansion, State
from backtrack_trl.decoding.tokens import TaskTokens
from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.countdown.format import Problem, format_prompt
from backtrack_trl.training.grpo import GRPOScriptArguments, train_grpo
from backtrack_trl.training.rollouts import (
    check_rollout_args,
    engine_rollout,
    make_rollout,
    make_search_rollout,
    rollout_seed,
)


COUNTDOWN = get_task("countdown")
P1 = format_prompt(Problem((3, 5, 2), 16))
P2 = format_prompt(Problem((3, 5, 2), 13))
# Every prompt: 3+5=8 then 8*2=16 (goal) or 8*2=17 (<backtrack>); 3*5=15 then <backtrack> (back to the prompt);
# 5-3=2 then nothing (EOS).
TABLE = {
    (): {"3+5=8": 0.4, "3*5=15": 0.3, "5-3=2": 0.3},
    ("3+5=8",): {"8*2=16": 0.5, "8*2=17": 0.5},
    ("3+5=8", "8*2=16"): {GOAL: 1.0},
    ("3+5=8", "8*2=17"): {BT: 1.0},
    ("3*5=15",): {BT: 1.0},
}
G = 8


def fake_trainer(model, step=0, seed=0, max_completion_length=48, metrics=None):
    """What a rollout reads of a GRPOTrainer."""
    accelerator = SimpleNamespace(
        unwrap_model=lambda m: m, process_index=0, state=SimpleNamespace(deepspeed_plugin=None, fsdp_plugin=None)
    )
    args = SimpleNamespace(
        seed=seed, temperature=1.0, top_p=1.0, top_k=0, max_completion_length=max_completion_length,
        ds3_gather_for_generation=True, gradient_checkpointing_kwargs=None,
    )  # fmt: skip
    log = (lambda name, value: metrics.setdefault(name, []).append(value)) if metrics is not None else None
    return SimpleNamespace(
        model_wrapped=model, accelerator=accelerator, args=args, state=SimpleNamespace(global_step=step),
        processing_class=tokenizer(), _log_metric=log,
    )  # fmt: skip


def texts(ids):
    return [tokenizer().decode(row, skip_special_tokens=False) for row in ids]


@pytest.fixture(scope="module")
def model():
    return scripted(TABLE, default={}).train()  # in training mode, as GRPOTrainer hands it over


def test_engine_rollout_returns_one_completion_per_entry_in_order_as_generate_would(model):
    prompts = [P1] * G + [P2] * G  # as TRL's RepeatSampler hands them over
    out = engine_rollout(prompts, fake_trainer(model))
    tok = tokenizer()
    eos = tok.eos_token_id
    assert model.training  # its mode is restored
    assert len(out["prompt_ids"]) == len(out["completion_ids"]) == len(out["logprobs"]) == 2 * G
    assert out["prompt_ids"] == tok(text=prompts)["input_ids"]  # TRL's own tokenization of a text prompt
    assert [len(lp) for lp in out["logprobs"]] == [len(ids) for ids in out["completion_ids"]]
    ends = {"3+5=8\n8*2=16\nGoal Reached!", "3+5=8\n8*2=17\n<backtrack>", "3*5=15\n<backtrack>", "5-3=2\n"}
    for ids, text in zip(out["completion_ids"], texts(out["completion_ids"]), strict=True):
        assert ids[-1] == eos and ids.count(eos) == 1  # appended after the goal / <backtrack>, sampled after 5-3=2
        assert text.removesuffix(tok.eos_token) in ends
    for ids, logprobs in zip(out["completion_ids"], out["logprobs"], strict=True):
        assert all(v <= 0 for v in logprobs)
        if ids[-2] in (tok.convert_tokens_to_ids(BT),) or texts([ids])[0].startswith("3+5=8\n8*2=16"):
            assert logprobs[-1] == 0.0  # the appended EOS was not sampled
    assert len(set(map(tuple, out["completion_ids"][:G]))) > 1  # a group, not one sample repeated


def test_engine_rollout_is_reproducible_per_step_and_draws_anew_each_step(model):
    prompts = [P1] * G
    first = engine_rollout(prompts, fake_trainer(model, step=3))["completion_ids"]
    assert engine_rollout(prompts, fake_trainer(model, step=3))["completion_ids"] == first
    assert engine_rollout(prompts, fake_trainer(model, step=4))["completion_ids"] != first
    assert engine_rollout(prompts, fake_trainer(model, step=3, seed=1))["completion_ids"] != first
    assert rollout_seed(0, 3, 0, 0) != rollout_seed(0, 3, 1, 0) != rollout_seed(0, 3, 0, 1)
    short = engine_rollout(prompts, fake_trainer(model, max_completion_length=3))
    assert all(len(ids) == 3 and ids[-1] != tokenizer().eos_token_id for ids in short["completion_ids"])


def test_search_rollout_group_is_the_engine_draw_and_search_value_is_the_planted_share(model):
    prompts = [P1] * G + [P2] * G
    metrics = {}
    trainer = fake_trainer(model, step=2, metrics=metrics)
    out = make_search_rollout(COUNTDOWN)(prompts, trainer)
    assert model.training
    assert out["completion_ids"] == engine_rollout(prompts, fake_trainer(model, step=2))["completion_ids"]
    assert len(out["search_value"]) == 2 * G
    assert [len(x) for x in out["logprobs"]] == [len(x) for x in out["completion_ids"]]
    tok = tokenizer()
    eos = tok.eos_token
    tokens = TaskTokens.from_tokenizer(tok, model)
    for group, prompt, seed_position in ((slice(0, G), P1, 0), (slice(G, 2 * G), P2, 1)):
        answers = [t.removesuffix(eos) for t in texts(out["completion_ids"][group])]
        values = out["search_value"][group]
        problem = COUNTDOWN.parse_prompt(prompt)
        solved_in_group = sum(COUNTDOWN.check(problem, a, mode="strict").correct for a in answers) / G
        # The search's round-1 draws from "3+5=8\n": the same keys (seed, round 1, state 0) on the engine itself.
        state = tuple(tok("3+5=8\n", add_special_tokens=False)["input_ids"])
        seed = rollout_seed(0, 2, 0, seed_position)
        engine = SamplingEngine(model, tokens, temperature=1.0, max_new_tokens=48)
        drawn = engine.run(tok(text=[prompt])["input_ids"], [Expansion(0, State(tokens=state), seed, round=1)], G)
        round_1 = sum(COUNTDOWN.check(problem, tok.decode(s.tokens), mode="strict").correct for s in drawn.samples) / G
        for answer, value in zip(answers, values, strict=True):
            if answer == "3*5=15\n<backtrack>":
                assert value == pytest.approx(solved_in_group)  # back to the prompt: the group itself
            elif answer == "3+5=8\n8*2=17\n<backtrack>":
                assert value == pytest.approx(round_1)
            else:
                assert value is None  # did not roll back
            assert value is None or 0.0 <= value <= 1.0
    assert any(v not in (None, 0.0) for v in out["search_value"][:G])  # the planted case is exercised
    assert set(metrics) == {"search/answer_correct", "search/oracle", "search/valued", "search/value"}
    assert metrics["search/oracle"][0] >= metrics["search/answer_correct"][0]


def test_bad_rollout_options_are_refused_with_the_option_and_the_fix():
    with pytest.raises(ValueError, match=r"--rollout 'engin': give one of trl, engine, search"):
        GRPOScriptArguments(dataset_name="d", rollout="engin")
    with pytest.raises(ValueError, match=r"--search_k 'sqrt': give 'paper', 'released', 'sqrt_b' or an integer"):
        GRPOScriptArguments(dataset_name="d", rollout="search", search_k="sqrt")
    with pytest.raises(ValueError, match=r"--search_credit must be >= 0 \(a magnitude\), got -1"):
        GRPOScriptArguments(dataset_name="d", search_credit=-1)
    assert GRPOScriptArguments(dataset_name="d", rollout="search", search_k="3").search_k == "3"
    assert make_rollout("trl", COUNTDOWN) is None and make_rollout("engine", COUNTDOWN) is engine_rollout
    args = SimpleNamespace(use_vllm=False, min_p=0.1)
    with pytest.raises(ValueError, match=r"--min_p is set but --rollout engine cannot honour it .*use --rollout trl"):
        check_rollout_args("engine", args)
    check_rollout_args("trl", args)  # TRL's own generation takes it
    with pytest.raises(ValueError, match="plain-text prompts"):
        engine_rollout([[{"role": "user", "content": "hi"}]] * 2, None)


@pytest.mark.slow
@pytest.mark.parametrize("rollout", ["engine", "search"])
def test_two_grpo_steps_with_our_rollouts(folders, tmp_path, rollout):  # noqa: F811 (the fixture)
    script_args, training_args, model_args = _args(folders, tmp_path / rollout)
    script_args.rollout = rollout
    script_args.reward_funcs = ["strict", "backtrack_aware"]
    metrics = train_grpo(script_args, training_args, model_args)
    assert metrics["global_step"] == 2 and metrics["first_reward"] is not None
    logged = json.loads((tmp_path / rollout / "trainer_state.json").read_text())["log_history"]
    steps = [e for e in logged if "rewards/strict/mean" in e]
    assert len(steps) == 2 and all(e["completions/mean_length"] > 0 for e in steps)
    assert all(("search/valued" in e) == (rollout == "search") for e in steps)
