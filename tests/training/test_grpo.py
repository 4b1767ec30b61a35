"""recipes/grpo.py: the options' checks, the prompts it trains on, and a 2-step GRPO run on a tiny model."""

import json
import os

import pytest
from _training_utils import char_tokenizer, save_tiny_model
from trl import GRPOConfig, ModelConfig

from backtrack_trl.data.build_config import BuildDatasetArguments
from backtrack_trl.data.builder import build_dataset
from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.tasks.countdown import CountdownConfig
from backtrack_trl.training.grpo import GRPOScriptArguments, load_prompts, parse_grpo_args, train_grpo


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "recipes", "countdown-tiny", "grpo", "config_default.yaml")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    args = BuildDatasetArguments(num_train_questions=16, num_test=4, num_proc=1)
    write_hub_dataset(build_dataset(args, CountdownConfig(num_numbers=3, max_number=20, max_target=100)),
                      root / "backtrack")  # fmt: skip
    save_tiny_model(str(root / "init"), char_tokenizer(), hidden_size=32)
    return root


def test_the_default_config_parses_and_bad_values_are_refused():
    script_args, training_args, model_args = parse_grpo_args(["--config", CONFIG])
    assert script_args.reward_funcs == ["backtrack_aware"] and training_args.num_generations == 8
    assert training_args.use_cpu and not training_args.bf16 and model_args.model_name_or_path
    with pytest.raises(ValueError, match=r"--temperature must be > 0 \(GRPO samples\), got 0.0"):
        parse_grpo_args(["--config", CONFIG, "--temperature", "0"])
    with pytest.raises(ValueError, match=r"--reward_funcs \['strict', 'strcit'\]: .* \('strcit' is not one\)"):
        GRPOScriptArguments(dataset_name="d", reward_funcs=["strict", "strcit"])


def test_the_prompts_are_the_distinct_prompts_of_the_train_split(folders, tmp_path):
    script_args = GRPOScriptArguments(dataset_name=str(folders / "backtrack"))
    prompts = load_prompts(script_args, GRPOConfig(str(tmp_path / "out"), use_cpu=True, bf16=False))
    assert prompts.column_names == ["prompt"] and len(prompts) == len(set(prompts["prompt"])) == 16
    script_args.max_train_samples = 5
    prompts = load_prompts(script_args, GRPOConfig(str(tmp_path / "out"), use_cpu=True, bf16=False))
    assert len(prompts) == 5


def _args(folders, output_dir, **overrides):
    values = dict(  # noqa: C408 (keyword style reads like the YAML recipes)
        use_cpu=True, bf16=False, activation_checkpointing=False, learning_rate=1e-3, max_steps=2,
        num_generations=4, per_device_train_batch_size=8, generation_batch_size=8, max_completion_length=24,
        temperature=1.0, beta=0.0, report_to="none", save_strategy="no", logging_steps=1, seed=0,
        dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    values.update(overrides)
    script_args = GRPOScriptArguments(
        dataset_name=str(folders / "backtrack"), reward_funcs=["strict", "step_validity"]
    )
    return script_args, GRPOConfig(str(output_dir), **values), ModelConfig(model_name_or_path=str(folders / "init"))


@pytest.mark.slow
def test_two_grpo_steps_train_save_the_model_s_own_generation_config_and_a_rerun_is_left_alone(folders, tmp_path):
    out = tmp_path / "grpo"
    metrics = train_grpo(*_args(folders, out))
    assert metrics["global_step"] == 2 and metrics["first_reward"] is not None
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "rewards/strict/mean" in entry]
    assert len(logged) == 2 and all("rewards/step_validity/mean" in entry for entry in logged)
    generation = json.loads((out / "generation_config.json").read_text())
    assert not generation.get("do_sample", False)  # TRL's sampling settings were not saved as the model's
    assert json.loads((out / "training_run.json").read_text())["finished"]
    again = train_grpo(*_args(folders, out))
    assert again["global_step"] == 2
