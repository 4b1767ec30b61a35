"""The options of the study (``recipes/self_improve.py``) and the fingerprint a study folder is created with.

A study folder remembers the configuration that created it (``state.json``): :func:`study_config` is that dict (the
options plus the content of every sub-recipe config) and :data:`RESUMABLE_OPTIONS` the options that may change
between runs of the same study (more rounds, another launcher, the optional Table 1 baselines).

Usage:

```python
from backtrack_trl.study.config import RESUMABLE_OPTIONS, SelfImproveArguments, study_config

args = SelfImproveArguments(rounds=1)  # the defaults: the countdown-tiny CPU study
config = study_config(args)  # reads the sub-recipe configs (run from the repository root)
print(sorted(key for key in config if key.endswith("_content")))
```
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from backtrack_trl.config_files import read_yaml
from backtrack_trl.study.harvest import KEEP_RULES


#: Options added after studies were first run, with their defaults: left out of a study's fingerprint while at the
#: default, so folders written before them stay resumable.
ADDED_OPTIONS = {"search_max_new_tokens": 64, "dpo_config": None, "kto_config": None, "reward_model_config": None,
                 "orm_n": [8, 16, 32], "num_processes": None, "search_backend": "hf", "grpo_config": None,
                 "round_trainer": "sft", "round_grpo_config": None}  # fmt: skip
#: The options naming a sub-recipe config: the fingerprint holds each file's content too (``<option>_content``).
SUB_CONFIGS = ("backtrack_data_config", "optimal_data_config", "init_model_config", "backtrack_sft_config",
               "optimal_sft_config", "eval_config", "round_sft_config", "dpo_config", "kto_config",
               "reward_model_config", "correction_sft_config", "grpo_config", "round_grpo_config")  # fmt: skip
#: Options that may change without invalidating a study's finished stages: asking for more rounds, or pushing,
#: continues a study; where the processes or the vLLM engine run does not change what they compute; adding the
#: optional Table 1 baselines (DPO, KTO, reward model, GRPO) to a finished study only adds stages. (GRPO rounds
#: fingerprint their own config as ``round_grpo_config``.)
RESUMABLE_OPTIONS = (
    "rounds", "overwrite", "push_to_hub", "hub_dataset_id", "accelerate_config", "eval_accelerate_config",
    "num_processes", "recipes_dir",
    "vllm_server_base_url", "vllm_serve", "vllm_python", "vllm_server_args", "vllm_server_env",
    *(f"{key}{suffix}" for key in ("dpo_config", "kto_config", "reward_model_config", "orm_n", "grpo_config")
      for suffix in ("", "_content")),
)  # fmt: skip


@dataclass
class SelfCorrectionArguments:
    """The study's options for backtrack rows from the model's own mistakes (:mod:`backtrack_trl.study.mistakes`):
    the self-correction stage after backtrack SFT and the rounds' mistake and replay rows."""

    correction_pool_size: int = field(
        default=4000,
        metadata={
            "help": "Training problems the backtrack-SFT model samples (correction_search) for the self-correction "
            "stage: its wrong answers become backtrack rows (its own prefix, the first wrong line masked, then "
            "<backtrack>) and correction_sft_config continues SFT on them plus replayed rows; the result is the "
            "round-0 model. 0: no self-correction (round 0 = the backtrack-SFT model)."
        },
    )
    correction_search: str = field(
        default="self_backtracking:n=8,b=0,temperature=0.7,batch_size=64",
        metadata={"help": "Decoder spec that samples the self-correction pool (b=0: plain samples)."},
    )
    correction_sft_config: str | None = field(
        default="recipes/countdown-tiny/sft/config_self_correct.yaml",
        metadata={"help": "recipes/sft.py config of the self-correction fine-tune (from the backtrack-SFT model)."},
    )
    mistakes_per_problem: int = field(
        default=8, metadata={"help": "Mistake rows kept per problem (self-correction stage and rounds)."}
    )
    forged_weight: int = field(
        default=1,
        metadata={"help": "Copies of a mistake row whose last step is its first wrong line (a forged final step)."},
    )
    replay_ratio: float = field(
        default=2.0,
        metadata={
            "help": "Rows replayed from the backtrack dataset's train split per harvested row (self-correction and "
            "rounds), so fine-tuning does not erase what backtrack SFT taught."
        },
    )
    round_mistakes: bool = field(
        default=True,
        metadata={
            "help": "Rounds also train on mistake rows from their own search and on replayed rows (false: kept "
            "correct paths only, the paper's expert iteration)."
        },
    )
    synthetic_eval_decoders: list[str] = field(
        default_factory=lambda: ["greedy", "self_backtracking:n=32,b=1"],
        metadata={
            "help": "With self-correction: decoders evaluated on the backtrack-SFT model before it (Table 1's "
            "'synthetic errors only' rows); empty: skip."
        },
    )

    def check_correction_options(self) -> None:
        """One clear error for an out-of-range self-correction option."""
        if self.correction_pool_size < 0 or self.mistakes_per_problem < 0 or self.forged_weight < 1:
            raise ValueError(
                f"correction_pool_size={self.correction_pool_size} and mistakes_per_problem="
                f"{self.mistakes_per_problem} must be >= 0, forged_weight={self.forged_weight} >= 1."
            )
        if not self.replay_ratio >= 0:
            raise ValueError(f"replay_ratio={self.replay_ratio}: must be >= 0.")
        if self.correction_pool_size and not self.correction_sft_config:
            raise ValueError("correction_pool_size > 0 needs correction_sft_config (or set correction_pool_size: 0).")
        from backtrack_trl.evaluation import check_decoder_specs

        check_decoder_specs([self.correction_search], where="correction_search: ")
        check_decoder_specs(self.synthetic_eval_decoders, where="synthetic_eval_decoders: ")


#: How a round trains the previous round's model (``round_trainer``).
ROUND_TRAINERS = ("sft", "grpo")


@dataclass
class GRPOStudyArguments:
    """The study's GRPO options (:mod:`backtrack_trl.study.stages.grpo`): Table 1's "Backtrack SFT + GRPO" rows and
    GRPO as the round trainer."""

    grpo_config: str | None = field(
        default=None,
        metadata={
            "help": "recipes/grpo.py config of Table 1's 'Backtrack SFT + GRPO' rows: GRPO from the round-0 model on "
            "the backtrack data's train prompts (models/grpo), evaluated with round_eval_decoders; the report draws "
            "its reward curve and sets its train time beside the rounds'. None: no GRPO rows."
        },
    )
    round_trainer: str = field(
        default="sft",
        metadata={
            "help": "How round k trains round k-1's model: 'sft' (the search harvests the round's pool and SFT "
            "learns the kept paths: expert iteration) or 'grpo' (recipes/grpo.py with round_grpo_config on the "
            "pool's prompts: no harvest, no control arm).",
            "choices": list(ROUND_TRAINERS),
        },
    )
    round_grpo_config: str | None = field(
        default=None,
        metadata={"help": "recipes/grpo.py config of the GRPO rounds (round_trainer: grpo). None: grpo_config."},
    )

    def check_grpo_options(self) -> None:
        """One clear error for a bad round trainer; a GRPO round without its own config takes ``grpo_config``."""
        if self.round_trainer not in ROUND_TRAINERS:
            raise ValueError(
                f"round_trainer={self.round_trainer!r}: choose 'sft' (SFT on the harvested paths) or 'grpo' "
                "(GRPO on the round's pool)."
            )
        if self.round_trainer == "grpo":
            self.round_grpo_config = self.round_grpo_config or self.grpo_config
            if not self.round_grpo_config:
                raise ValueError(
                    "round_trainer: grpo needs a recipes/grpo.py config: set round_grpo_config (or grpo_config), "
                    "e.g. recipes/countdown-tiny/grpo/config_default.yaml."
                )


@dataclass
class SelfImproveArguments(SelfCorrectionArguments, GRPOStudyArguments):
    """Options of ``recipes/self_improve.py``. Paths of sub-recipe configs are relative to the working directory."""

    output_dir: str = field(
        default="results/countdown-tiny",
        metadata={"help": "Study folder: data, models, evaluations, rounds and the report are written under it."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Delete an existing study folder and start again."})
    backtrack_data_config: str = field(
        default="recipes/countdown-tiny/data/config_backtrack.yaml",
        metadata={"help": "recipes/build_dataset.py config of the optimal+backtrack dataset."},
    )
    optimal_data_config: str | None = field(
        default="recipes/countdown-tiny/data/config_optimal.yaml",
        metadata={"help": "recipes/build_dataset.py config of the optimal-only baseline dataset (None: no baseline)."},
    )
    init_model_config: str | None = field(
        default="recipes/countdown-tiny/init_model.yaml",
        metadata={"help": "recipes/init_model.py config (None: the SFT configs' model_name_or_path is used as is)."},
    )
    backtrack_sft_config: str = field(
        default="recipes/countdown-tiny/sft/config_backtrack.yaml",
        metadata={"help": "recipes/sft.py config of the backtrack model (round 0)."},
    )
    optimal_sft_config: str | None = field(
        default="recipes/countdown-tiny/sft/config_optimal.yaml",
        metadata={"help": "recipes/sft.py config of the optimal-only baseline (None: no baseline)."},
    )
    backtrack_model: str | None = field(
        default=None,
        metadata={
            "help": "An already trained backtrack model (folder or Hub id) to self-improve: skips init_model and the "
            "SFT stages (round 0 = this model). It must have the <backtrack> token."
        },
    )
    eval_config: str = field(
        default="recipes/countdown-tiny/eval/config_default.yaml",
        metadata={"help": "recipes/evaluate_decoders.py config with the Table 1 decoders (round 0)."},
    )
    round_sft_config: str = field(
        default="recipes/countdown-tiny/sft/config_round.yaml",
        metadata={"help": "recipes/sft.py config for the round fine-tunes (hyperparameters; paths are set here)."},
    )
    dpo_config: str | None = field(
        default=None,
        metadata={
            "help": "recipes/preference.py config (method dpo): adds the paper's DPO baseline to Table 1 (preference "
            "pairs from the backtrack data, DPO from the optimal-SFT model, greedy evaluation). Off by default: the "
            "CPU study is over its 30-minute budget already."
        },
    )
    kto_config: str | None = field(
        default=None, metadata={"help": "recipes/preference.py config (method kto): the KTO baseline, as dpo_config."}
    )
    reward_model_config: str | None = field(
        default=None,
        metadata={
            "help": "recipes/reward_model.py config: trains an outcome reward model on the optimal-SFT model's "
            "samples of train problems and adds best-of-N selected by it (N in orm_n) to Table 1."
        },
    )
    orm_n: list[int] = field(
        default_factory=lambda: [8, 16, 32], metadata={"help": "N of the best-of-N rows selected by the reward model."}
    )
    round_eval_decoders: list[str] = field(
        default_factory=lambda: ["greedy", "self_backtracking:n=32,b=1"],
        metadata={
            "help": "Decoder specs evaluated after every round (as in recipes/evaluate_decoders.py); the first "
            "search spec is the 'search' column of the per-round table."
        },
    )
    rounds: int = field(default=3, metadata={"help": "Number of self-improvement rounds (more continues a study)."})
    pool_size: int = field(
        default=2000, metadata={"help": "Training problems searched per round (a fresh slice of the train split)."}
    )
    search_n: int = field(default=16, metadata={"help": "Samples per expansion N of the harvesting search."})
    search_b: int = field(default=1, metadata={"help": "Backtracking rounds b of the harvesting search."})
    search_temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the search."})
    search_batch_size: int = field(default=64, metadata={"help": "Problems searched at once."})
    search_max_new_tokens: int = field(
        default=64, metadata={"help": "Response length limit of the harvesting search (tokens; as the eval config's)."}
    )
    search_backend: str = field(
        default="hf",
        metadata={
            "help": "Engine of the harvesting search: 'hf' (the model in each harvest process) or 'vllm' (vLLM; with "
            "vllm_server_base_url every harvest process sends its requests to one server).",
            "choices": ["hf", "vllm"],
        },
    )
    vllm_server_base_url: str | None = field(
        default=None,
        metadata={
            "help": "A vLLM server for the harvest (search_backend vllm), e.g. http://localhost:8000. It must serve the "
            "round's model: the study does not restart it, so on GPU nodes restart the server on each round's model "
            "(see docs/scale.md) or leave this unset to start an in-process engine per round."
        },
    )
    vllm_serve: bool = field(
        default=False,
        metadata={
            "help": "With search_backend vllm: start a vLLM server on each round's model for its harvest (stopped "
            "after it), from vllm_python with vllm_server_args and vllm_server_env; every harvest process sends its "
            "requests there. The way to give vLLM its own GPUs on one node (see the README)."
        },
    )
    vllm_python: str = field(
        default="python",
        metadata={"help": "Python of the environment with vLLM, for vllm_serve (CPU: .venv-vllm/bin/python)."},
    )
    vllm_server_args: str = field(
        default="",
        metadata={
            "help": "Extra arguments of the vLLM server, e.g. '--data-parallel-size 4 --gpu-memory-utilization 0.9' "
            "(CPU: '--dtype float32 --no-enable-chunked-prefill')."
        },
    )
    vllm_server_env: list[str] = field(
        default_factory=list,
        metadata={"help": "KEY=VALUE environment of the vLLM server, e.g. CUDA_VISIBLE_DEVICES=4,5,6,7."},
    )
    keep: str = field(
        default="best_correct",
        metadata={
            "help": "Which path to keep per problem: 'best_correct' (highest-scoring candidate the strict checker "
            "accepts) or 'chosen' (the search's selected answer, kept only if correct).",
            "choices": list(KEEP_RULES),
        },
    )
    control: bool = field(
        default=True,
        metadata={
            "help": "Also fine-tune the round-0 model on the solver's optimal paths for the problems round 1 kept "
            "(same count, same recipe): tells the gain from the search's own paths apart from more SFT."
        },
    )
    accelerate_config: str = field(
        default="accelerate_configs/cpu.yaml",
        metadata={"help": "accelerate config used to launch training and evaluation."},
    )
    eval_accelerate_config: str | None = field(
        default=None,
        metadata={"help": "accelerate config of the evaluations (None: accelerate_config), e.g. ddp.yaml on GPUs."},
    )
    num_processes: int | None = field(
        default=None,
        metadata={
            "help": "Processes (GPUs) of every accelerate launch, passed as `accelerate launch --num_processes` "
            "(None: the accelerate config's num_processes)."
        },
    )
    recipes_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the sub-recipes the stages run (build_dataset.py, init_model.py, sft.py, "
            "evaluate_decoders.py). None: the folder of the running recipes/self_improve.py, else ./recipes."
        },
    )
    task: str = field(default="countdown", metadata={"help": "Registered task of the study (backtrack_trl.tasks)."})
    seed: int = field(default=42, metadata={"help": "Seed of the pools and the searches."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push each round's dataset as config round_<k>."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Hub dataset id for --push_to_hub."})

    def __post_init__(self):
        # On the command line `--optimal_data_config None` arrives as the string "None": the help says None disables.
        # (The annotations, not the fields' types: HfArgumentParser rewrites `str | None` fields to `str`.)
        annotations = {}
        for klass in reversed(type(self).__mro__):  # the mixins' options too
            annotations.update(klass.__dict__.get("__annotations__", {}))
        for name, annotation in annotations.items():
            value = getattr(self, name)
            if "None" in str(annotation) and isinstance(value, str) and value.strip().lower() in ("none", "null", ""):
                setattr(self, name, None)
        if self.num_processes is not None and self.num_processes < 1:
            raise ValueError(f"num_processes={self.num_processes}: must be >= 1 (or unset for the config's count).")
        if self.rounds < 0:
            raise ValueError(f"rounds={self.rounds}: must be >= 0.")
        if self.pool_size < 1:
            raise ValueError(f"pool_size={self.pool_size}: must be >= 1.")
        if self.search_n < 1 or self.search_b < 0:
            raise ValueError(f"search_n={self.search_n} must be >= 1 and search_b={self.search_b} >= 0.")
        if self.keep not in KEEP_RULES:
            raise ValueError(f"keep={self.keep!r}: choose {' or '.join(map(repr, KEEP_RULES))}.")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("--push_to_hub needs --hub_dataset_id NAME.")
        if not self.search_temperature >= 0:
            raise ValueError(f"search_temperature={self.search_temperature}: must be >= 0 (0 = greedy rows).")
        if self.search_batch_size < 1:
            raise ValueError(f"search_batch_size={self.search_batch_size}: must be >= 1.")
        from backtrack_trl.decoding.api import check_decoder_options
        from backtrack_trl.evaluation import check_decoder_specs

        check_decoder_specs(self.round_eval_decoders, where="round_eval_decoders: ")
        self.check_correction_options()
        self.check_grpo_options()
        if self.search_backend not in ("hf", "vllm"):
            raise ValueError(f"search_backend={self.search_backend!r}: choose 'hf' or 'vllm'.")
        if self.vllm_serve and self.search_backend != "vllm":
            raise ValueError("vllm_serve: true starts a vLLM server for the harvest: set search_backend: vllm too.")
        if self.vllm_serve and self.vllm_server_base_url:
            raise ValueError(
                "Give vllm_serve (the study starts a server per round) or vllm_server_base_url, not both."
            )
        bad = [item for item in self.vllm_server_env if "=" not in item or not item.split("=", 1)[0]]
        if bad:
            raise ValueError(f"vllm_server_env: {bad[0]!r} is not KEY=VALUE (e.g. CUDA_VISIBLE_DEVICES=4,5,6,7).")
        search = {"n": self.search_n, "b": self.search_b, "temperature": self.search_temperature}
        try:
            check_decoder_options("self_backtracking", {**search, "batch_size": self.search_batch_size})
        except ValueError as error:
            raise ValueError(f"The harvesting search (search_n/search_b/search_temperature): {error}") from None


def thread_setting() -> str:
    """The CPU threads of the study's jobs: training results depend on it (report it with every figure)."""
    import torch

    omp = os.environ.get("OMP_NUM_THREADS")
    return f"OMP_NUM_THREADS={omp}" if omp else f"{torch.get_num_threads()} (torch default, OMP_NUM_THREADS unset)"


def study_config(args: SelfImproveArguments) -> dict[str, Any]:
    """The configuration a study folder is fingerprinted with: the options (those of :data:`ADDED_OPTIONS` only when
    changed, the task only when not countdown, so folders made before them stay resumable) and the content of every
    sub-recipe config."""
    config = asdict(args)
    if config["task"] == "countdown":  # folders made before tasks were plug-ins stay resumable
        del config["task"]
    for key, default in ADDED_OPTIONS.items():
        if config[key] == default:
            del config[key]
    for key in SUB_CONFIGS:
        if config.get(key):
            config[f"{key}_content"] = read_yaml(config[key], option=f"--{key}")
    return config
