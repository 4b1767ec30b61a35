"""A small study config on a tiny task and model, and running recipes/self_improve.py on it (the slow study tests)."""

import os
import subprocess
import sys
from pathlib import Path

import yaml


REPO = Path(__file__).resolve().parents[1]

DATA = {
    "mode": "backtrack",
    "num_train_questions": 60,
    "num_test": 4,
    "num_numbers": 2,
    "min_number": 1,
    "max_number": 9,
    "min_target": 1,
    "max_target": 20,
    "new_target_fraction": 0.1,
    "seed": 3,
    "num_proc": 1,
}
INIT = {"tokenizer": "countdown", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": 128, "seed": 0}  # fmt: skip
SFT = {"use_cpu": True, "bf16": False, "activation_checkpointing": False, "learning_rate": 1.0e-2,
       "lr_scheduler_type": "constant", "max_steps": 120, "per_device_train_batch_size": 32, "max_length": 64,
       "eval_strategy": "no", "logging_steps": 20, "save_strategy": "no", "report_to": "none", "seed": 0}  # fmt: skip
EVAL = {"splits": ["test_seen", "test_new"], "max_problems": 4, "max_new_tokens": 24, "seed": 0,
        "decoders": ["greedy", "best_of_n:n=4", "self_backtracking:n=4,b=0", "self_backtracking:n=4,b=1"],
        "probe_facts": True, "probe_max_operand": 9}  # fmt: skip


# The other Table 1 baselines (optional study stages), as small as they run.
PREFERENCE = {"use_cpu": True, "bf16": False, "activation_checkpointing": False, "max_steps": 5, "beta": 0.1,
              "per_device_train_batch_size": 8, "max_length": 64, "learning_rate": 1.0e-3, "report_to": "none",
              "save_strategy": "no", "logging_steps": 5}  # fmt: skip
REWARD = {"stage": "all", "max_problems": 40, "eval_problems": 8, "num_samples": 4, "max_new_tokens": 24,
          "use_cpu": True, "bf16": False, "activation_checkpointing": False, "max_steps": 5,
          "per_device_train_batch_size": 8, "max_length": 64, "report_to": "none", "save_strategy": "no",
          "eval_strategy": "no"}  # fmt: skip
# GRPO (the Table 1 GRPO row, GRPO rounds): 2 steps of 2 prompts x 4 completions.
GRPO = {"use_cpu": True, "bf16": False, "activation_checkpointing": False, "learning_rate": 1.0e-3, "beta": 0.0,
        "max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 8, "generation_batch_size": 8,
        "max_completion_length": 24, "temperature": 1.0, "logging_steps": 1, "save_strategy": "no",
        "report_to": "none", "dataloader_num_workers": 0, "disable_tqdm": True}  # fmt: skip


def write_yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def study_configs(folder: Path, output_dir: Path, baseline: bool = True, grpo: bool = False) -> Path:
    """The tiny study's configs in ``folder``; ``baseline``: the optimal-only model and the other Table 1 baselines;
    ``grpo``: the GRPO Table 1 row (2 GRPO steps)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = {
        "output_dir": str(output_dir),
        "backtrack_data_config": write_yaml(folder / "data_bt.yaml", {**DATA, "output_dir": "unused"}),
        "optimal_data_config": write_yaml(
            folder / "data_opt.yaml", {**DATA, "mode": "optimal", "output_dir": "unused"}
        )
        if baseline
        else None,
        "init_model_config": write_yaml(folder / "init.yaml", {**INIT, "output_dir": "unused"}),
        "backtrack_sft_config": write_yaml(folder / "sft.yaml", {**SFT, "output_dir": "unused"}),
        "optimal_sft_config": str(folder / "sft.yaml") if baseline else None,
        "eval_config": write_yaml(folder / "eval.yaml", {**EVAL, "output_dir": "unused"}),
        "round_sft_config": write_yaml(folder / "round.yaml", {**SFT, "max_steps": 15, "learning_rate": 2e-3}),
        "dpo_config": write_yaml(folder / "dpo.yaml", {**PREFERENCE, "method": "dpo"}) if baseline else None,
        "kto_config": write_yaml(folder / "kto.yaml", {**PREFERENCE, "method": "kto"}) if baseline else None,
        "reward_model_config": write_yaml(folder / "orm.yaml", REWARD) if baseline else None,
        "grpo_config": write_yaml(folder / "grpo.yaml", GRPO) if grpo else None,
        "orm_n": [2, 4],
        "round_eval_decoders": ["greedy", "self_backtracking:n=4,b=1"],
        "correction_pool_size": 30,
        "correction_search": "self_backtracking:n=4,b=0,temperature=0.7,batch_size=30,max_new_tokens=24",
        "correction_sft_config": write_yaml(
            folder / "self_correct.yaml", {**SFT, "max_steps": 15, "learning_rate": 2e-3}
        ),
        "synthetic_eval_decoders": ["greedy"],
        "rounds": 2,
        "pool_size": 30,
        "search_n": 4,
        "search_b": 1,
        "search_batch_size": 30,
        "control": baseline,
        "accelerate_config": str(REPO / "accelerate_configs" / "cpu.yaml"),
        "seed": 0,
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def run_study(config: Path, cwd: Path, *extra: str, stop_after: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("BACKTRACK_TRL_STOP_AFTER", None)
    if stop_after:
        env["BACKTRACK_TRL_STOP_AFTER"] = stop_after
    cmd = [sys.executable, str(REPO / "recipes" / "self_improve.py"), "--config", str(config), *extra]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
