"""recipes/sft.py and backtrack_trl.training.sft: dataset loading, launch configs and (slow) real trainings on CPU.

The slow tests launch the recipe exactly as users do (a subprocess, `accelerate launch` for 2 processes) on a tiny
Llama + character tokenizer that lacks <backtrack>, so the token-adding path runs in every launch mode.
"""

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _training_utils import char_tokenizer, sample_rows, save_tiny_model, write_hub_folder
from trl import ModelConfig, SFTConfig

from backtrack_trl.training.sft import load_sft_datasets, train
from backtrack_trl.training.sft_config import SFTScriptArguments


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SFT = os.path.join(ROOT, "recipes", "sft.py")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
# Tiny models gain nothing from more threads, and one thread per process keeps launches fast on a busy machine.
ENV.setdefault("OMP_NUM_THREADS", "1")


def run(cmd, timeout=300):
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}\nSTDOUT:\n{result.stdout[-4000:]}\nSTDERR:\n{result.stderr[-6000:]}"
    return result.stdout + result.stderr


# --- fast: the command, datasets, launch configs ----------------------------------------------------------------------------


def test_help_works():
    out = run([sys.executable, SFT, "--help"], timeout=120)
    for option in ("--dataset_name", "--mask_wrong_step", "--model_name_or_path", "--use_peft", "--max_length"):
        assert option in out


def test_dataset_without_contract_columns(tmp_path):
    rows = [{k: v for k, v in row.items() if k not in ("kind", "wrong_step")} for row in sample_rows(2)]
    folder = write_hub_folder(str(tmp_path / "data"), {"train": rows})
    script_args = SFTScriptArguments(dataset_name=folder)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['kind', 'wrong_step'\]"):
        load_sft_datasets(script_args, SFTConfig(str(tmp_path / "o"), use_cpu=True, bf16=False))
    script_args = SFTScriptArguments(dataset_name=folder, dataset_train_split="training")
    with pytest.raises(ValueError, match=r"no split 'training' \(it has \['train'\]\)"):
        load_sft_datasets(script_args, SFTConfig(str(tmp_path / "o"), use_cpu=True, bf16=False))


def test_accelerate_configs():
    def load(name):
        with open(os.path.join(ROOT, "accelerate_configs", name)) as f:
            return yaml.safe_load(f)

    for name in ("ddp", "zero2", "zero3", "fsdp", "cpu", "cpu_ddp", "cpu_zero2", "cpu_zero3"):
        # precision comes from the recipe (fp32 1B vs bf16 3B): the accelerate config must not force one
        assert load(f"{name}.yaml")["mixed_precision"] == "no", name
    cpu, ddp = load("cpu.yaml"), load("cpu_ddp.yaml")
    assert cpu["distributed_type"] == "NO" and cpu["use_cpu"] is True and cpu["num_processes"] == 1
    # MULTI_CPU silently runs one process here; MULTI_GPU + use_cpu: true in the recipe gives 2 gloo ranks
    assert ddp["distributed_type"] == "MULTI_GPU" and ddp["num_processes"] == 2 and ddp["use_cpu"] is False
    assert load("zero2.yaml")["deepspeed_config"]["zero_stage"] == 2
    assert load("zero3.yaml")["deepspeed_config"]["zero3_save_16bit_model"] is True
    assert load("cpu_zero3.yaml")["deepspeed_config"]["zero3_save_16bit_model"] is True


# --- fast: the output folder and the task, in-process trainings of a few steps ---------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft_small")
    model = save_tiny_model(str(root / "init"), char_tokenizer(bos=True, backtrack=False), hidden_size=32, layers=1)
    return root, model, write_hub_folder(str(root / "data"), {"train": sample_rows(12)})


def train_small(small, output_dir, data=None, model=None, **script):
    root, init, rows = small
    values = dict(  # noqa: C408 (keyword style reads like the YAML recipes)
        use_cpu=True, bf16=False, activation_checkpointing=False, max_steps=3, per_device_train_batch_size=8,
        max_length=128, report_to="none", save_strategy="no", seed=0, disable_tqdm=True, logging_steps=1,
    )  # fmt: skip
    return train(
        SFTScriptArguments(dataset_name=data or rows, **script),
        SFTConfig(str(output_dir), **values),
        ModelConfig(model_name_or_path=model or init, dtype="float32"),
    )


def files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_dataset_folder_as_output_dir_is_refused_and_kept(small):
    data = Path(small[2])
    before = files(data)
    with pytest.raises(FileExistsError) as error:
        train_small(small, data)
    message = str(error.value)
    assert f"--output_dir {str(data)!r} holds README.md, data/, which a sft run does not write" in message
    assert "(it looks like a dataset folder)" in message and "--overwrite_output_dir" in message
    assert files(data) == before  # before the fix the model card replaced the dataset card


def test_a_finished_run_is_left_alone(small, caplog):
    out = small[0] / "finished"
    first = train_small(small, out)
    before = files(out)
    with caplog.at_level(logging.INFO):
        again = train_small(small, out)  # before the fix: one step more, train_results.json rewritten
    assert again["global_step"] == first["global_step"] == 3 and files(out) == before
    assert "already holds this finished sft run" in caplog.text and "new --output_dir or --overwrite_output_dir" in (
        caplog.text
    )
    with pytest.raises(FileExistsError, match=r"holds a finished sft run with other settings \(mask_wrong_step: "
                       r"True -> False\)"):  # fmt: skip
        train_small(small, out, mask_wrong_step=False)
    # --overwrite_output_dir trains it again, from scratch: the same weights (the run is deterministic).
    again = train_small(small, out, overwrite_output_dir=True)
    assert again["global_step"] == 3 and files(out)["model.safetensors"] == before["model.safetensors"]


@pytest.fixture(scope="module")
def sudoku_data(tmp_path_factory):
    from backtrack_trl.data.build_config import BuildDatasetArguments
    from backtrack_trl.data.builder import build_dataset
    from backtrack_trl.data.hub_layout import write_hub_dataset
    from backtrack_trl.tasks.sudoku import SudokuConfig

    folder = tmp_path_factory.mktemp("sudoku") / "backtrack"
    args = BuildDatasetArguments(task="sudoku", num_train_questions=4, num_test=1, num_proc=1)
    return str(write_hub_dataset(build_dataset(args, SudokuConfig()), folder))


def test_the_dataset_and_the_model_must_be_of_the_recipe_s_task(small, sudoku_data, tmp_path):
    from backtrack_trl.tasks.tokenizer import build_task_tokenizer

    # A Sudoku dataset under a Countdown config: before the fix, a model card claiming Countdown.
    with pytest.raises(ValueError, match=rf"--dataset_name {sudoku_data!r} holds sudoku problems .* but --task is "
                       r"'countdown'.*Set `task: sudoku`"):  # fmt: skip
        train_small(small, tmp_path / "out", data=sudoku_data)
    countdown_init = save_tiny_model(
        str(tmp_path / "countdown-init"), build_task_tokenizer("countdown"), hidden_size=32
    )
    with pytest.raises(ValueError, match=r"--model_name_or_path .* is a countdown model .* but --task is 'sudoku'"):
        train_small(small, tmp_path / "out", data=sudoku_data, model=countdown_init, task="sudoku")
    assert not (tmp_path / "out").exists()


# --- slow: real trainings --------------------------------------------------------------------------------------------

TRAIN_FLAGS = [
    "--use_cpu", "true", "--bf16", "false", "--activation_checkpointing", "false", "--learning_rate", "3e-3",
    "--logging_steps", "2", "--report_to", "none", "--max_length", "128", "--seed", "0", "--save_strategy", "no",
    "--lr_scheduler_type", "constant",
]  # fmt: skip


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    model = save_tiny_model(str(root / "init"), char_tokenizer(bos=True, backtrack=False), tie=True)
    test_rows = [row for row in sample_rows(6, seed=1) if row["kind"] == "optimal"]
    data = write_hub_folder(str(root / "data"), {"train": sample_rows(48), "test_seen": test_rows})
    return {"root": root, "model": model, "data": data}


def sft_cmd(assets, output_dir, *extra, launcher=None):
    cmd = [sys.executable, SFT] if launcher is None else launcher + [SFT]
    return cmd + [
        "--model_name_or_path", assets["model"], "--dataset_name", assets["data"], "--output_dir", str(output_dir),
        *TRAIN_FLAGS, *extra,
    ]  # fmt: skip


def launch(config: str) -> list[str]:
    with socket.socket() as s:  # a free port: other launches may run on this machine
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        os.path.join(ROOT, "accelerate_configs", config), "--main_process_port", str(port),
    ]  # fmt: skip


def logged_losses(output_dir) -> list[float]:
    with open(os.path.join(output_dir, "trainer_state.json")) as f:
        return [entry["loss"] for entry in json.load(f)["log_history"] if "loss" in entry]


def load_saved(output_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(output_dir), AutoTokenizer.from_pretrained(output_dir)


@pytest.mark.slow
def test_end_to_end_sft_then_resume(assets):
    out = assets["root"] / "e2e"
    run(sft_cmd(assets, out, "--max_steps", "30", "--per_device_train_batch_size", "16", "--save_strategy", "steps",
                "--save_steps", "30", "--eval_strategy", "steps", "--eval_steps", "30"))  # fmt: skip
    losses = logged_losses(out)
    assert losses[-1] < 0.7 * losses[0], losses
    model, tokenizer = load_saved(out)
    ids = tokenizer("<backtrack>", add_special_tokens=False)["input_ids"]
    assert len(ids) == 1 and ids[0] == tokenizer.convert_tokens_to_ids("<backtrack>")
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows % 64 == 0 and len(tokenizer) <= rows < len(tokenizer) + 64  # resized (padded) when the token was added
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == model.config.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    card = (out / "README.md").read_text()
    assert "SelfBacktrackingDecoder(model, tokenizer, n=32, b=1)" in card and "Final training loss" in card
    # the folder ships the search for from_pretrained(..., trust_remote_code=True).generate
    assert "def generate(" in (out / "custom_generate" / "generate.py").read_text()
    assert json.loads((out / "all_results.json").read_text())["eval_loss"] < losses[0]

    # The same command with more steps resumes from checkpoint-30 instead of starting over.
    log = run(sft_cmd(assets, out, "--max_steps", "34", "--per_device_train_batch_size", "16"))
    assert "Resuming from checkpoint" in log and "checkpoint-30" in log
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 34


@pytest.mark.slow
def test_lora_run_trains_the_backtrack_row(assets):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = assets["root"] / "lora"
    run(sft_cmd(assets, out, "--max_steps", "12", "--per_device_train_batch_size", "16", "--use_peft",
                "--lora_r", "8", "--lora_target_modules", "q_proj", "v_proj"))  # fmt: skip
    assert (out / "adapter_config.json").exists() and "AutoPeftModelForCausalLM" in (out / "README.md").read_text()
    base = AutoModelForCausalLM.from_pretrained(assets["model"]).get_input_embeddings().weight
    trained = AutoPeftModelForCausalLM.from_pretrained(str(out)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(out)
    row = trained.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("<backtrack>")]
    mean_init = base.mean(dim=0)  # the row <backtrack> started from
    assert (row - mean_init).norm() > 1e-3
    assert torch.equal(trained.get_output_embeddings().weight, trained.get_input_embeddings().weight)  # still tied


@pytest.fixture(scope="module")
def reference(assets):
    """A one-process run with global batch 16, the reference for the 2-process runs (2 x 8)."""
    out = assets["root"] / "single"
    run(sft_cmd(assets, out, "--max_steps", "8", "--per_device_train_batch_size", "16"))
    return load_saved(out)[0].state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("config", ["cpu_ddp.yaml", "cpu_zero2.yaml", "cpu_zero3.yaml"])
def test_two_process_cpu_launch(assets, reference, config):
    out = assets["root"] / config.replace(".yaml", "")
    log = run(
        sft_cmd(assets, out, "--max_steps", "8", "--per_device_train_batch_size", "8", "--log_level_replica", "info",
                launcher=launch(config)),
        timeout=400,
    )  # fmt: skip
    # Each rank collated its own half of every global batch ...
    for rank in (0, 1):
        assert f"rank {rank}/2: collator saw" in log
    assert "collator saw 0 examples" not in log
    # ... and the gradients were averaged: the result equals one process with the same global batch (2 x 8 = 16).
    model, tokenizer = load_saved(out)
    assert len(tokenizer.tokenize("<backtrack>")) == 1
    state = model.state_dict()
    for name, tensor in reference.items():
        torch.testing.assert_close(state[name], tensor, atol=2e-4, rtol=1e-3, msg=f"{config}: {name}")
