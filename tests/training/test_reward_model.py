"""recipes/reward_model.py: the ORM pairs (strict labels, train problems only) and a tiny RewardTrainer run that learns."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _decoding_utils import GOAL, scripted, tiny_llama, tokenizer
from datasets import Dataset, DatasetDict, load_dataset
from trl import ModelConfig, RewardConfig

from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.countdown.format import Problem, format_prompt
from backtrack_trl.training.reward_model import (
    RewardModelScriptArguments,
    build_orm_dataset,
    make_pairs,
    parse_args,
    train_reward_model,
)


ROOT = Path(__file__).resolve().parents[2]
TASK = get_task("countdown")


def problems_folder(tmp_path) -> str:
    """Train split: (5,3)->8 (one right and one wrong sample), (5,3)->2 (a TEST problem too) and (5,3)->15 (no
    right sample: no pair)."""
    rows = lambda problems: [TASK.problem_to_row(p) for p in problems]  # noqa: E731
    train = rows([Problem((5, 3), 8), Problem((5, 3), 2), Problem((5, 3), 15), Problem((5, 3), 8)])
    dataset = DatasetDict(
        {"train": Dataset.from_list(train), "test_seen": Dataset.from_list(rows([Problem((5, 3), 2)]))}
    )
    return str(write_hub_dataset(dataset, tmp_path / "problems"))


def test_pairs_are_strictly_labelled_and_never_use_a_test_problem(tmp_path):
    model = scripted({(): {"5+3=8": 0.5, "5-3=2": 0.5}})
    args = RewardModelScriptArguments(
        stage="data", problems_dataset=problems_folder(tmp_path), max_problems=10, eval_problems=0, num_samples=16,
        temperature=1.0, preference_dataset=str(tmp_path / "pairs"),
    )  # fmt: skip
    summary = build_orm_dataset(args, model=model, tokenizer=tokenizer())
    assert summary["problems"] == 2 and summary["test_problem_rows_skipped"] == 1
    rows = list(load_dataset(str(tmp_path / "pairs"))["train"])
    assert rows and {row["target"] for row in rows} == {8}  # (5,3)->2 is a test problem; (5,3)->15 has no right one
    for row in rows:
        problem = TASK.problem_from_row(row)
        assert row["prompt"] == format_prompt(problem)
        assert TASK.check(problem, row["chosen"], mode="strict").correct
        assert not TASK.check(problem, row["rejected"], mode="strict").correct
    assert (rows[0]["chosen"], rows[0]["rejected"]) == ("5+3=8\n" + GOAL, "5-3=2\n" + GOAL)


def test_make_pairs_spreads_the_responses():
    assert make_pairs(["a", "b"], ["x", "y", "z"], 3) == [("a", "x"), ("b", "y"), ("a", "y")]
    assert len(set(make_pairs(["a", "b"], ["x", "y", "z"], 100))) == 6
    assert make_pairs(["a"], [], 4) == []


def test_a_test_split_is_refused():
    with pytest.raises(ValueError, match="never trains on test problems"):
        RewardModelScriptArguments(problems_split="test_seen")


def pairs_folder(tmp_path) -> str:
    """Right answers use "+", wrong ones "-": a pattern a tiny model learns in a few dozen steps."""
    rows = []
    for a in range(1, 9):
        for b in range(1, 5):
            prompt = format_prompt(Problem((a, b), a + b))
            rows.append(
                {"prompt": prompt, "chosen": f"{a}+{b}={a + b}\n{GOAL}", "rejected": f"{a}-{b}={a - b}\n{GOAL}"}
            )
    dataset = DatasetDict({"train": Dataset.from_list(rows[:28]), "eval": Dataset.from_list(rows[28:])})
    return str(write_hub_dataset(dataset, tmp_path / "pairs"))


def test_a_tiny_reward_trainer_run_learns_the_pairs(tmp_path):
    tiny_llama(hidden_size=32, layers=2, seed=3).save_pretrained(tmp_path / "policy")
    tokenizer().save_pretrained(tmp_path / "policy")
    args = RewardModelScriptArguments(stage="train", preference_dataset=pairs_folder(tmp_path))
    training_args = RewardConfig(
        str(tmp_path / "orm"), use_cpu=True, bf16=False, activation_checkpointing=False, max_steps=40,
        learning_rate=3e-3, per_device_train_batch_size=8, logging_steps=10, save_strategy="no", report_to="none",
        dataloader_num_workers=0, seed=0, disable_tqdm=True,
    )  # fmt: skip
    metrics = train_reward_model(args, training_args, ModelConfig(str(tmp_path / "policy"), dtype="float32"))
    assert metrics["pairwise_accuracy_after"] > metrics["pairwise_accuracy_before"]
    assert metrics["pairwise_accuracy_after"] >= 0.9
    print("ORM pairwise accuracy", metrics)
    saved = tmp_path / "orm"
    assert (saved / "README.md").read_text().count("pairwise accuracy") == 1
    # The saved folder is a best_of_n reward model.
    from backtrack_trl.decoding.reward_scorer import RewardModelScorer

    scorer = RewardModelScorer.from_folder(str(saved))
    prompt = format_prompt(Problem((7, 2), 9))
    right, wrong = scorer.score([prompt, prompt], ["7+2=9\n" + GOAL, "7-2=5\n" + GOAL])
    assert scorer.model.config.pad_token_id == tokenizer().pad_token_id and right > wrong


def test_recipes_parse_and_help_runs(tmp_path):
    script_args, training_args, _ = parse_args(
        ["--config", str(ROOT / "recipes/countdown-tiny/reward_model/config_default.yaml")]
    )
    assert script_args.stage == "all" and training_args.use_cpu and not training_args.bf16
    from dataclasses import fields

    known = {f.name for cls in (RewardModelScriptArguments, RewardConfig, ModelConfig) for f in fields(cls)}
    gpu = yaml.safe_load((ROOT / "recipes/Llama-3.2-1B/reward_model/config_default.yaml").read_text())
    assert set(gpu) <= known
    help_text = subprocess.run(
        [sys.executable, str(ROOT / "recipes/reward_model.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--stage" in help_text and "--preference_dataset" in help_text
