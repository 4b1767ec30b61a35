"""GRPO from the task's checker (``recipes/grpo.py``): TRL's ``GRPOTrainer`` on a dataset's distinct prompts, with
rewards from :mod:`backtrack_trl.training.rewards`.

The prompts come from any contract dataset (a backtrack or optimal dataset of ``recipes/build_dataset.py``): each
distinct ``prompt`` of the train split is one GRPO question. The rewards read ``<backtrack>`` from TRL's
``completion_ids`` (TRL's text has it deleted). TRL rewrites the model's generation config while sampling; the saved
model gets its own back (EOS, padding, greedy by default) so our decoders read it as after SFT. ``--rollout engine``
or ``search`` draws the completions with our sampling engine or the self-backtracking search instead of TRL's
``generate`` (:mod:`backtrack_trl.training.rollouts`).

Usage:

```bash
accelerate launch --config_file accelerate_configs/cpu.yaml recipes/grpo.py \\
    --config recipes/countdown-tiny/grpo/config_default.yaml
python recipes/grpo.py --config recipes/countdown-tiny/grpo/config_default.yaml --max_steps 2 --output_dir /tmp/g
python recipes/grpo.py --config recipes/countdown-tiny/grpo/config_default.yaml --rollout search --output_dir /tmp/s
```
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer, ModelConfig, ScriptArguments, get_peft_config

from backtrack_trl.data.loading import load_hub_dataset, pick_split
from backtrack_trl.errors import recipe_parser
from backtrack_trl.logs import setup_logging
from backtrack_trl.provenance import write_provenance
from backtrack_trl.tasks.base import get_task
from backtrack_trl.training.checkpoints import ResumeAtTheEndMixin, resume_checkpoint
from backtrack_trl.training.model_loading import configure_generation, load_model, load_tokenizer
from backtrack_trl.training.recipe_args import parse_recipe_args
from backtrack_trl.training.rewards import REWARDS, get_reward
from backtrack_trl.training.rollouts import ROLLOUTS, check_rollout, check_rollout_args, make_rollout
from backtrack_trl.training.run_folder import OVERWRITE_HELP, plan_recipe_run
from backtrack_trl.training.sft_config import check_training_values
from backtrack_trl.training.task_check import check_dataset_task, check_model_task, first_row


logger = logging.getLogger(__name__)


@dataclass
class GRPOScriptArguments(ScriptArguments):
    """Script arguments of ``recipes/grpo.py``."""

    dataset_config: str | None = field(default=None, metadata={"help": "Dataset config (default: the default one)."})
    task: str = field(default="countdown", metadata={"help": "Registered task of the dataset (backtrack_trl.tasks)."})
    reward_funcs: list[str] = field(
        default_factory=lambda: ["backtrack_aware"],
        metadata={"help": f"Rewards by name (backtrack_trl.training.rewards): {', '.join(sorted(REWARDS))}."},
    )
    backtrack_credit: float = field(
        default=0.0,
        metadata={
            "help": "backtrack_aware: reward of a <backtrack> right after the first wrong step. Keep it 0: a positive "
            "credit is hacked (the policy writes a wrong step on purpose and backs off; docs/grpo.md)."
        },
    )
    false_goal_penalty: float = field(
        default=0.5, metadata={"help": "backtrack_aware: penalty of 'Goal Reached!' on a wrong answer."}
    )
    no_answer_penalty: float = field(
        default=0.0,
        metadata={
            "help": "backtrack_aware: penalty of an answer that stops without 'Goal Reached!' and without <backtrack> "
            "(> 0 with false_goal_penalty > 0: <backtrack> is the only free failure)."
        },
    )
    search_credit: float = field(
        default=0.5,
        metadata={
            "help": "backtrack_aware with --rollout search: a <backtrack> right after the first wrong step scores "
            "search_credit x the share of the search's samples from the rolled-back state that solve the problem "
            "(instead of backtrack_credit)."
        },
    )
    rollout: str = field(
        default="trl",
        metadata={
            "help": f"Who draws the completions: {', '.join(ROLLOUTS)}. trl: TRL's generate; engine: our batched "
            "cached sampling engine; search: the self-backtracking search (b=1), whose round-0 samples are the "
            "group and whose rolled-back states' samples give search_value (backtrack_trl.training.rollouts)."
        },
    )
    search_k: str = field(
        default="paper",
        metadata={"help": "--rollout search: states re-expanded after round 0: paper, released, sqrt_b or an int."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use the first N distinct prompts of the train split only."}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})

    def __post_init__(self):
        unknown = [name for name in self.reward_funcs if name not in REWARDS]
        if unknown or not self.reward_funcs:
            raise ValueError(
                f"--reward_funcs {self.reward_funcs}: give one or more of {', '.join(sorted(REWARDS))}"
                + (f" ({unknown[0]!r} is not one)." if unknown else ".")
            )
        check_rollout(self.rollout, self.search_k)
        if not self.search_credit >= 0:
            raise ValueError(f"--search_credit must be >= 0 (a magnitude), got {self.search_credit!r}.")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"--max_train_samples must be >= 1 (or unset), got {self.max_train_samples!r}.")


def parse_grpo_args(argv: Sequence[str] | None = None) -> tuple[GRPOScriptArguments, GRPOConfig, ModelConfig]:
    """``(script_args, GRPOConfig, ModelConfig)`` of ``--config recipe.yaml`` + flags, checked before any work."""
    argv = list(sys.argv[1:] if argv is None else argv)
    hint = "List the options of recipes/grpo.py with `python recipes/grpo.py --help`."
    parser = recipe_parser((GRPOScriptArguments, GRPOConfig, ModelConfig))
    script_args, training_args, model_args = parse_recipe_args(parser, argv, hint)
    check_grpo_values(training_args)
    return script_args, training_args, model_args


def check_grpo_values(args: GRPOConfig) -> None:
    """The numbers GRPOConfig takes that cannot train, named before any model loads."""
    check_training_values(args)
    if args.num_generations is None or args.num_generations < 2:
        raise ValueError(f"--num_generations must be >= 2 (GRPO compares a group), got {args.num_generations!r}.")
    if args.max_completion_length is None or args.max_completion_length < 1:
        raise ValueError(f"--max_completion_length must be >= 1, got {args.max_completion_length!r}.")
    if args.temperature is None or args.temperature <= 0:
        raise ValueError(f"--temperature must be > 0 (GRPO samples), got {args.temperature!r}.")


def load_prompts(script_args: GRPOScriptArguments, training_args: GRPOConfig):
    """The distinct prompts of the train split as a ``prompt``-only dataset (the first ``max_train_samples``)."""
    dataset = load_hub_dataset(script_args.dataset_name, script_args.dataset_config, training_args=training_args)
    split = script_args.dataset_train_split
    train = pick_split(
        dataset, split, f"--dataset_train_split {split!r} is not a split of {script_args.dataset_name!r} "
        f"(it has {list(dataset.keys())})."
    )  # fmt: skip
    if "prompt" not in train.column_names:
        raise ValueError(
            f"--dataset_name {script_args.dataset_name!r} has no 'prompt' column (it has {train.column_names}); "
            "build the data with recipes/build_dataset.py."
        )
    seen: dict[str, None] = {}
    for prompt in train["prompt"]:
        seen.setdefault(prompt, None)
        if script_args.max_train_samples is not None and len(seen) >= script_args.max_train_samples:
            break
    return Dataset.from_dict({"prompt": list(seen)})


class BacktrackGRPOTrainer(ResumeAtTheEndMixin, GRPOTrainer):
    """GRPOTrainer that resumes like our other trainers (no extra step after the last checkpoint)."""


def train_grpo(script_args: GRPOScriptArguments, training_args: GRPOConfig, model_args: ModelConfig) -> dict[str, Any]:
    """Train with GRPO and save the model and tokenizer in ``training_args.output_dir``; return the metrics."""
    task = get_task(script_args.task)
    check_rollout_args(script_args.rollout, training_args)
    setup_logging(training_args)
    plan = plan_recipe_run("grpo", script_args, training_args, model_args)
    if plan.finished is not None:
        return plan.finished
    prompts = load_prompts(script_args, training_args)
    check_dataset_task(script_args.task, first_row(prompts), script_args.dataset_name)
    tokenizer = load_tokenizer(model_args, training_args)
    check_model_task(script_args.task, model_args.model_name_or_path, tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    options = {
        "backtrack_credit": script_args.backtrack_credit,
        "false_goal_penalty": script_args.false_goal_penalty,
        "no_answer_penalty": script_args.no_answer_penalty,
        "search_credit": script_args.search_credit,
    }
    rewards = [
        get_reward(name, task, tokenizer, **(options if name == "backtrack_aware" else {}))
        for name in script_args.reward_funcs
    ]
    checkpoint = resume_checkpoint(training_args, fresh=script_args.overwrite_output_dir)
    trainer = BacktrackGRPOTrainer(
        model=load_model(model_args, training_args),
        reward_funcs=rewards,
        args=training_args,
        train_dataset=prompts,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        rollout_func=make_rollout(script_args.rollout, task, script_args.search_k),
    )
    if trainer.is_world_process_zero():
        plan.record()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(result.metrics)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    configure_generation(trainer.model, tokenizer)  # TRL's sampling settings are not the model's
    trainer.model.config.use_cache = True  # TRL turns the cache off for training; generate() wants it back
    trainer.save_model(training_args.output_dir)
    rewards_logged = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    metrics.update(
        global_step=trainer.state.global_step,
        first_reward=rewards_logged[0] if rewards_logged else None,
        last_reward=rewards_logged[-1] if rewards_logged else None,
        output_dir=training_args.output_dir,
    )
    if trainer.is_world_process_zero():
        write_provenance(training_args.output_dir, seed=training_args.seed)
        plan.record(metrics)
    return metrics


__all__ = ["GRPOScriptArguments", "check_grpo_values", "load_prompts", "parse_grpo_args", "train_grpo"]
