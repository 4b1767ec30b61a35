"""The options of ``recipes/harvest.py`` (:class:`HarvestArguments`) and their checks, the harvest's keep rules and
search methods. :mod:`backtrack_trl.study.harvest` re-exports them.

Usage:

```python
from backtrack_trl.study.harvest_args import HarvestArguments

args = HarvestArguments(pool_file="pool.jsonl", output_dir="rounds", config_name="round_1", search="best_of_n:n=4")
print(args.search_options())  # {'method': 'best_of_n', 'n': 4}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# What pick_path can keep; the one list (self_improve's --keep takes its choices from it).
KEEP_RULES = ("best_correct", "chosen", "none")
# Decoders a harvest can search with (those whose candidates carry the scores ``best_correct`` ranks by).
HARVEST_METHODS = {
    "self_backtracking": "SelfBacktrackingDecoder",
    "best_of_n": "BestOfNDecoder",
    "greedy": "GreedyDecoder",
}


@dataclass
class HarvestArguments:
    """Options of ``recipes/harvest.py`` (also the YAML keys of ``--config``)."""

    model_name_or_path: str = field(
        default="results/countdown-tiny/models/backtrack-sft", metadata={"help": "Model folder that searches."}
    )
    output_dir: str = field(
        default="results/countdown-tiny/round_datasets",
        metadata={"help": "Hub-layout dataset folder the kept paths are written to (as config `config_name`)."},
    )
    config_name: str = field(default="round_1", metadata={"help": "Dataset config of this harvest (e.g. round_1)."})
    pool_file: str | None = field(
        default=None,
        metadata={"help": "JSON-lines file of pool problems (the task's problem columns); or give dataset_name."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub-layout dataset folder whose `dataset_split` problems form the pool (without pool_file)."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of dataset_name the pool comes from."})
    pool_size: int | None = field(
        default=None, metadata={"help": "The first N distinct problems of dataset_name's split (None: all)."}
    )
    test_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Dataset folder whose test splits' problems must never be harvested, checked besides those of "
            "dataset_name and of output_dir when it is an existing dataset (a pool problem among them is an error). "
            "Give it with pool_file when output_dir is a new folder: the dataset the model is evaluated on."
        },
    )
    search: str = field(
        default="self_backtracking:n=16,b=1",
        metadata={
            "help": "Decoder spec of the search, as in recipes/evaluate_decoders.py: self_backtracking, best_of_n or "
            "greedy with options, e.g. 'self_backtracking:n=16,b=1,temperature=0.7,batch_size=64,backend=vllm'."
        },
    )
    vllm_server_base_url: str | None = field(
        default=None,
        metadata={
            "help": "With backend=vllm: a vLLM server serving the model (e.g. http://node1:8000); None: in-process."
        },
    )
    keep: str = field(
        default="best_correct",
        metadata={"help": "Path kept per problem ('none': mistakes only).", "choices": list(KEEP_RULES)},
    )
    mistakes_per_problem: int = field(
        default=0,
        metadata={
            "help": "Also write up to this many backtrack rows per problem from the search's own wrong answers (the "
            "model's prefix, its first wrong line masked, then <backtrack>); 0: none."
        },
    )
    forged_weight: int = field(
        default=1, metadata={"help": "Copies of each mistake row whose last step is its first wrong line."}
    )
    replay_dataset: str | None = field(
        default=None,
        metadata={"help": "Contract dataset folder whose train rows are replayed into the harvest (None: none)."},
    )
    replay_ratio: float = field(
        default=0.0, metadata={"help": "Replayed rows per harvested row (kept paths + mistake rows)."}
    )
    seed: int = field(default=0, metadata={"help": "Problem i of the pool is searched with seed + i."})
    stats_file: str | None = field(
        default=None, metadata={"help": "Also write the counts (JSON) here, e.g. rounds/round_1/harvest.json."}
    )
    task: str = field(default="countdown", metadata={"help": "Registered task of the problems (backtrack_trl.tasks)."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Weights dtype of the searching model: 'auto' (the checkpoint's on a GPU, float32 on CPU), "
            "bfloat16, float16 or float32.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar (main process)."})

    def __post_init__(self):
        if (self.pool_file is None) == (self.dataset_name is None):
            raise ValueError("Give the pool as exactly one of --pool_file FILE.jsonl or --dataset_name FOLDER.")
        from backtrack_trl.data.hub_layout import valid_config_name

        if not valid_config_name(self.config_name):  # before the search, not at its write (minutes later)
            raise ValueError(
                f"--config_name {self.config_name!r} cannot name a dataset config (it is also a folder name): use "
                "letters, digits, '_', '-' and '.' (not first), not 'data', e.g. --config_name round_1."
            )
        if self.pool_size is not None and self.pool_size < 1:
            raise ValueError(f"pool_size={self.pool_size}: must be >= 1 (or None for the whole split).")
        if self.keep not in KEEP_RULES:
            raise ValueError(f"keep={self.keep!r}: choose {' or '.join(map(repr, KEEP_RULES))}.")
        if self.mistakes_per_problem < 0 or self.forged_weight < 1 or not self.replay_ratio >= 0:
            raise ValueError(
                f"mistakes_per_problem={self.mistakes_per_problem} (>= 0), forged_weight={self.forged_weight} (>= 1) "
                f"and replay_ratio={self.replay_ratio} (>= 0): one is out of range."
            )
        from backtrack_trl.decoding.api import check_decoder_options
        from backtrack_trl.evaluation.specs import parse_decoder_spec

        _, method, options = parse_decoder_spec(self.search)
        if method not in HARVEST_METHODS:
            raise ValueError(f"--search {self.search!r}: the harvest searches with one of {sorted(HARVEST_METHODS)}.")
        try:
            check_decoder_options(method, options)
        except ValueError as error:
            raise ValueError(f"--search {self.search!r}: {error}") from None

    def search_options(self) -> dict[str, Any]:
        """The decoder options of ``--search`` (with ``method``) for :func:`harvest`."""
        from backtrack_trl.evaluation.specs import parse_decoder_spec

        _, method, options = parse_decoder_spec(self.search)
        if self.vllm_server_base_url:
            options.setdefault("backend", "vllm")
            options["vllm_server_base_url"] = self.vllm_server_base_url
        return {"method": method, **options}
