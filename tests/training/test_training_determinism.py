"""Training is a function of the config, the seed and the thread count: the same ones give bit-identical weights.

Fast: ``train`` twice in this process (the second run starts from whatever RNG state the first left behind, so an
unseeded shuffle, dropout or weight init shows as a difference). Slow: the whole pipeline (data, init, SFT, evaluation)
launched as recipes under two different PYTHONHASHSEED values, so no set or dict order reaches the data or the weights.
"""

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _training_utils import char_tokenizer, sample_rows, save_tiny_model, write_hub_folder
from safetensors.torch import load_file
from trl import ModelConfig, SFTConfig

from backtrack_trl.training.sft import train
from backtrack_trl.training.sft_config import SFTScriptArguments


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    # No <backtrack> in the tokenizer: the SFT adds it and mean-initialises its row, which must be deterministic too.
    model = save_tiny_model(str(root / "init"), char_tokenizer(bos=True, backtrack=False), hidden_size=32, layers=1)
    data = write_hub_folder(str(root / "data"), {"train": sample_rows(24)})
    return root, model, data


def _train(assets, name: str, seed: int = 0) -> Path:
    root, model, data = assets
    output_dir = root / name
    training_args = SFTConfig(
        str(output_dir), use_cpu=True, bf16=False, activation_checkpointing=False, learning_rate=3e-3,
        lr_scheduler_type="constant", max_steps=6, per_device_train_batch_size=8, max_length=128, logging_steps=1,
        report_to="none", save_strategy="no", seed=seed, disable_tqdm=True,
    )  # fmt: skip
    train(SFTScriptArguments(dataset_name=data), training_args, ModelConfig(model_name_or_path=model, dtype="float32"))
    return output_dir


def _different_tensors(a: Path, b: Path) -> list[str]:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    return [name for name in first if not torch.equal(first[name], second[name])]


def _losses(output_dir: Path) -> list[float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def test_training_twice_gives_bit_identical_weights_and_records_provenance(assets):
    first, second = _train(assets, "first"), _train(assets, "second")
    assert _different_tensors(first, second) == []
    assert filecmp.cmp(first / "model.safetensors", second / "model.safetensors", shallow=False)
    assert _losses(first) == _losses(second) and len(_losses(first)) == 6
    # The comparison can see a change: another seed shuffles the rows into other batches, so other weights.
    assert _different_tensors(first, _train(assets, "seed_1", seed=1))

    info = json.loads((first / "provenance.json").read_text())  # beside train_results.json
    assert (first / "train_results.json").is_file()
    assert info["seed"] == 0 and info["torch_threads"] == torch.get_num_threads()
    assert info["revision"] and info["torch"] == torch.__version__


def _run_pipeline(folder: Path, hash_seed: str) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONHASHSEED=hash_seed)  # fmt: skip
    python = [sys.executable]
    launch = python + ["-m", "accelerate.commands.launch", "--quiet", "--config_file",
                       str(ROOT / "accelerate_configs" / "cpu.yaml")]  # fmt: skip
    commands = [
        python + [str(ROOT / "recipes/build_dataset.py"), "--output_dir", str(folder / "data"), "--mode", "backtrack",
                  "--num_train_questions", "40", "--num_test", "4", "--num_numbers", "3", "--max_number", "9",
                  "--max_target", "30", "--seed", "5", "--num_proc", "2"],
        python + [str(ROOT / "recipes/init_model.py"), "--output_dir", str(folder / "init"), "--hidden_size", "32",
                  "--intermediate_size", "64", "--num_hidden_layers", "1", "--num_attention_heads", "2",
                  "--seed", "3"],
        launch + [str(ROOT / "recipes/sft.py"), "--model_name_or_path", str(folder / "init"), "--dataset_name",
                  str(folder / "data"), "--output_dir", str(folder / "sft"), "--use_cpu", "true", "--bf16", "false",
                  "--activation_checkpointing", "false", "--max_steps", "8", "--per_device_train_batch_size", "8",
                  "--learning_rate", "3e-3", "--max_length", "128", "--report_to", "none", "--save_strategy", "no",
                  "--seed", "0", "--disable_tqdm", "true"],
        launch + [str(ROOT / "recipes/evaluate_decoders.py"), "--model_name_or_path", str(folder / "sft"),
                  "--dataset_name", str(folder / "data"), "--output_dir", str(folder / "eval"), "--max_problems", "4",
                  "--max_new_tokens", "24", "--decoders", "greedy", "self_backtracking:n=4,b=1", "--progress",
                  "false"],
    ]  # fmt: skip
    for command in commands:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _without_timings(text: str) -> list:
    rows = [json.loads(line) for line in text.splitlines()]
    for row in rows:
        row.pop("wall_time", None)
    return rows


@pytest.mark.slow
def test_the_pipeline_does_not_depend_on_python_hash_order(tmp_path):
    _run_pipeline(tmp_path / "a", "0")
    _run_pipeline(tmp_path / "b", "12345")
    a, b = tmp_path / "a", tmp_path / "b"
    parquet = sorted(path.relative_to(a) for path in (a / "data").rglob("*.parquet"))
    assert len(parquet) == 3
    for name in parquet:
        assert filecmp.cmp(a / name, b / name, shallow=False), name
    assert filecmp.cmp(a / "init/model.safetensors", b / "init/model.safetensors", shallow=False)
    assert _different_tensors(a / "sft", b / "sft") == []
    generations = sorted(path.relative_to(a) for path in (a / "eval" / "generations").rglob("*.jsonl"))
    assert len(generations) == 4  # 2 splits x 2 decoders
    for name in generations:
        assert _without_timings((a / name).read_text()) == _without_timings((b / name).read_text()), name
