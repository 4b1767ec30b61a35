"""backtrack_trl.training.reward_model: a tiny RewardTrainer run that learns, saved as a best_of_n reward model."""

import pytest
from _decoding_utils import GOAL, tiny_llama, tokenizer
from datasets import Dataset, DatasetDict
from trl import ModelConfig, RewardConfig

from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.tasks.countdown.format import Problem, format_prompt
from backtrack_trl.training.reward_config import RewardModelScriptArguments
from backtrack_trl.training.reward_model import train_reward_model


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


def test_the_new_score_head_is_the_same_for_the_same_seed(tmp_path):
    import torch

    from backtrack_trl.training.reward_model import load_reward_base

    folder = tmp_path / "policy"
    tiny_llama().save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    heads = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed * 100 + len(heads))  # whatever the global state, the seed decides the head
        training_args = RewardConfig(output_dir=str(tmp_path / "out"), seed=seed, use_cpu=True, report_to="none")
        model, _ = load_reward_base(ModelConfig(model_name_or_path=str(folder)), training_args)
        heads.append(model.score.weight.detach().clone())
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])


def test_a_finished_reward_model_run_is_left_alone(tmp_path):
    tiny_llama(hidden_size=32, layers=1, seed=3).save_pretrained(tmp_path / "policy")
    tokenizer().save_pretrained(tmp_path / "policy")
    args = RewardModelScriptArguments(stage="train", preference_dataset=pairs_folder(tmp_path))

    def run(**overrides):
        values = dict(use_cpu=True, bf16=False, max_steps=2, per_device_train_batch_size=8, save_strategy="no",  # noqa: C408
                      report_to="none", seed=0, disable_tqdm=True, **overrides)  # fmt: skip
        return train_reward_model(
            args, RewardConfig(str(tmp_path / "orm"), **values), ModelConfig(str(tmp_path / "policy"))
        )

    first = run()
    files = {p.name: p.read_bytes() for p in (tmp_path / "orm").iterdir() if p.is_file()}
    assert run() == first  # the recorded metrics, nothing trained or written again
    assert {p.name: p.read_bytes() for p in (tmp_path / "orm").iterdir() if p.is_file()} == files
    with pytest.raises(FileExistsError, match=r"finished reward_model run with other settings \(learning_rate"):
        run(learning_rate=1e-3)
