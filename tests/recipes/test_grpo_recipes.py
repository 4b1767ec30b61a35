"""The GRPO recipes beyond countdown-tiny (recipes/<folder>/grpo/config_*.yaml): every one parses with no unknown key
and points at what its folder's other recipes write; the Sudoku and Llama-3.2-1B configs train 2 steps on CPU at
tiny size (the Llama one with vLLM and bf16 off), a few seconds each."""

import glob
import json
import os
from dataclasses import fields

import pytest
import torch
import yaml
from trl import GRPOConfig, ModelConfig

from backtrack_trl.data.build_config import parse_data_args
from backtrack_trl.data.builder import build_dataset
from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.tasks.tokenizer import build_task_tokenizer
from backtrack_trl.training.grpo import GRPOScriptArguments, parse_grpo_args, train_grpo
from backtrack_trl.training.model_init import init_tiny_llama, save_model_and_tokenizer


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "recipes", "*", "grpo", "config_*.yaml")))
LLAMA = os.path.join(ROOT, "recipes", "Llama-3.2-1B", "grpo", "config_default.yaml")
SUDOKU = os.path.join(ROOT, "recipes", "sudoku-tiny", "grpo", "config_default.yaml")


def _recipe(*parts):
    return yaml.safe_load(open(os.path.join(ROOT, "recipes", *parts)))


def _parse(path, *flags):
    # GPU recipes ask for bf16, which TrainingArguments refuses without a GPU unless use_cpu is set.
    cpu = [] if torch.cuda.is_available() or yaml.safe_load(open(path)).get("use_cpu") else ["--use_cpu", "true"]
    return parse_grpo_args(["--config", path, *cpu, *flags])


def test_the_sudoku_and_llama_recipes_exist():
    assert LLAMA in RECIPES and SUDOKU in RECIPES


@pytest.mark.parametrize("path", RECIPES)
def test_every_grpo_recipe_parses_with_known_keys_and_a_whole_group_per_generation_batch(path):
    known = {f.name for cls in (GRPOScriptArguments, GRPOConfig, ModelConfig) for f in fields(cls)}
    assert set(yaml.safe_load(open(path))) <= known
    script_args, training_args, model_args = _parse(path)
    assert training_args.generation_batch_size % training_args.num_generations == 0
    assert script_args.reward_funcs and model_args.model_name_or_path and script_args.dataset_name
    folder = path.split(os.sep)[-3]
    assert folder in training_args.output_dir and folder in script_args.dataset_name
    if training_args.use_cpu and "Llama" not in folder:  # CPU recipes: fp32, no activation checkpointing
        assert not training_args.bf16 and not training_args.activation_checkpointing and not training_args.use_vllm


def test_the_llama_recipe_samples_on_colocated_vllm_from_the_llama_sft_model():
    script_args, training_args, model_args = _parse(LLAMA)
    sft = _recipe("Llama-3.2-1B", "sft", "config_backtrack.yaml")
    assert model_args.model_name_or_path == sft["output_dir"] and script_args.dataset_name == sft["dataset_name"]
    assert training_args.use_vllm and training_args.vllm_mode == "colocate" and training_args.bf16
    assert 0 < training_args.vllm_gpu_memory_utilization <= 0.5  # the rest of each GPU trains
    assert training_args.vllm_max_model_length >= 64 + training_args.max_completion_length
    assert "zero2.yaml" in open(LLAMA).read() and script_args.task == "countdown"


def test_the_sudoku_recipe_starts_from_the_sudoku_study_s_model_and_fits_the_longest_answer(tmp_path):
    script_args, training_args, model_args = _parse(SUDOKU)
    study = _recipe("sudoku-tiny", "self_improve", "config_default.yaml")
    assert model_args.model_name_or_path == f"{study['output_dir']}/models/backtrack-sft"
    assert script_args.dataset_name == f"{study['output_dir']}/data/backtrack" and script_args.task == "sudoku"
    # The longest correct answer of the study's data (fewest givens), tokenized, plus EOS must fit.
    args, config = parse_data_args(["--config", os.path.join(ROOT, study["backtrack_data_config"]),
                                    "--num_train_questions", "200", "--num_test", "5", "--num_proc", "1"])  # fmt: skip
    train = build_dataset(args, config)["train"]
    tokenizer = build_task_tokenizer("sudoku")
    longest = max(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in train["completion"])
    assert longest == 71 and longest + 1 <= training_args.max_completion_length


def _tiny_run(tmp_path, task, data_config, numbers=False):
    """A tiny dataset from ``data_config`` and a tiny Llama with ``task``'s tokenizer, for a 2-step run of a recipe."""
    args, config = parse_data_args(["--config", data_config, "--num_train_questions", "16", "--num_test", "4",
                                    "--num_proc", "1"])  # fmt: skip
    write_hub_dataset(build_dataset(args, config), tmp_path / "data")
    tokenizer = build_task_tokenizer(task, numbers=numbers)
    model = init_tiny_llama(
        tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    save_model_and_tokenizer(model, tokenizer, tmp_path / "init")
    return [
        "--model_name_or_path", str(tmp_path / "init"), "--dataset_name", str(tmp_path / "data"),
        "--output_dir", str(tmp_path / "grpo"), "--max_steps", "2", "--logging_steps", "1", "--save_strategy", "no",
        "--max_completion_length", "24", "--disable_tqdm", "true", "--dataloader_num_workers", "0",
    ]  # fmt: skip


def _check_trained(out, reward="backtrack_aware"):
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if f"rewards/{reward}/mean" in entry]
    assert state["global_step"] == 2 and len(logged) == 2
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    generation = json.loads((out / "generation_config.json").read_text())
    assert not generation.get("do_sample", False)  # the model's own generation config, not TRL's sampling one
    return logged


def test_the_llama_recipe_trains_two_steps_on_cpu_at_tiny_size(tmp_path):
    data = os.path.join(ROOT, "recipes", "Llama-3.2-1B", "data", "config_backtrack.yaml")
    flags = _tiny_run(tmp_path, "countdown", data, numbers=True)  # Llama-3's 1-3 digit number tokens
    cpu = ["--use_cpu", "true", "--bf16", "false", "--use_vllm", "false"]
    batch = ["--num_generations", "4", "--per_device_train_batch_size", "8"]
    script_args, training_args, model_args = parse_grpo_args(["--config", LLAMA, *flags, *cpu, *batch])
    assert training_args.beta > 0 and training_args.generation_batch_size == 8
    metrics = train_grpo(script_args, training_args, model_args)
    logged = _check_trained(tmp_path / "grpo")
    assert metrics["global_step"] == 2 and all("kl" in entry for entry in logged)  # the recipe's KL term ran


def test_the_sudoku_recipe_trains_two_steps_on_a_tiny_model(tmp_path):
    data = os.path.join(ROOT, "recipes", "sudoku-tiny", "data", "config_backtrack.yaml")
    flags = _tiny_run(tmp_path, "sudoku", data)
    batch = ["--per_device_train_batch_size", "16", "--generation_batch_size", "16"]  # 2 puzzles x 8 generations
    metrics = train_grpo(*parse_grpo_args(["--config", SUDOKU, *flags, *batch]))
    _check_trained(tmp_path / "grpo")
    assert metrics["global_step"] == 2 and metrics["first_reward"] is not None
