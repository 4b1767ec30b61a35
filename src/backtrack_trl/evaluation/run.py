"""Evaluate a model folder on a task's test splits with a list of decoders (the orchestration: load, shard over
processes, decode, gather, score, write); write generations, metrics and a markdown table.
``recipes/evaluate_decoders.py`` is the command-line front end; ``accelerate launch`` with several processes shards
the problems (``split_between_processes``) and gathers one result set (``gather_object``).

Decoders are given as compact specs ``method[:key=value,...]`` (a ``label=`` key renames the row), e.g.
``greedy``, ``beam:n=16``, ``best_of_n:n=8``, ``self_backtracking:n=32,b=1``, ``released:n=8,b=1``.

Every problem is sampled with the seed ``seed + its index in the split``, so results do not depend on the number of
processes or on the batch composition.

Usage: see the package docstring (:mod:`backtrack_trl.evaluation`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backtrack_trl.atomic_io import atomic_path, atomic_write_text
from backtrack_trl.decoding.results import SearchResult
from backtrack_trl.decoding.selection import SELECTION_RULES
from backtrack_trl.errors import did_you_mean
from backtrack_trl.evaluation.fact_probe import fact_probe_for
from backtrack_trl.evaluation.scoring import load_task_metric, markdown_tables, score_results
from backtrack_trl.evaluation.specs import (
    DEFAULT_DECODERS,
    RESCORABLE,
    check_decoder_specs,
    parse_decoder_spec,
    spec_file_name,
)
from backtrack_trl.provenance import write_provenance
from backtrack_trl.tasks import get_task


@dataclass
class EvaluationArguments:
    """Arguments of ``recipes/evaluate_decoders.py`` (also the YAML keys of ``--config``)."""

    model_name_or_path: str = field(
        default="models/countdown-tiny/backtrack-sft", metadata={"help": "Model folder (or Hub id) with tokenizer."}
    )
    dataset_name: str = field(
        default="data/countdown-tiny/backtrack", metadata={"help": "Hub-layout dataset folder (or Hub id)."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset config name, if any."})
    task: str = field(default="countdown", metadata={"help": "Registered task of the problems (backtrack_trl.tasks)."})
    splits: list[str] = field(default_factory=lambda: ["test_seen", "test_new"], metadata={"help": "Splits."})
    decoders: list[str] = field(
        default_factory=lambda: list(DEFAULT_DECODERS),
        metadata={"help": "Decoder specs 'method[:key=value,...]', e.g. 'self_backtracking:n=32,b=1'."},
    )
    max_problems: int | None = field(default=None, metadata={"help": "Use the first N problems of each split."})
    max_new_tokens: int = field(default=64, metadata={"help": "Response length limit (decoders that take it)."})
    batch_size: int | None = field(default=None, metadata={"help": "Problems per batch (default: per decoder)."})
    seed: int = field(default=0, metadata={"help": "Problem i of a split is sampled with seed + i."})
    output_dir: str = field(default="results/countdown-tiny/eval", metadata={"help": "Where results are written."})
    output_format: str = field(default="jsonl", metadata={"help": "Per-problem generations: 'jsonl' or 'parquet'."})
    selection_rules: list[str] = field(
        default_factory=lambda: list(SELECTION_RULES),
        metadata={"help": "Selection rules replayed on the candidates of sampling decoders (extra table)."},
    )
    backtrack_weight: float = field(default=1.0, metadata={"help": "Weight of the backtrack value in 'combined'."})
    device: str | None = field(
        default=None,
        metadata={"help": "cpu / cuda (each process its own GPU, cuda:<local rank>) / cuda:N; default: accelerate's."},
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Weights dtype of the decoded model: 'auto' (the checkpoint's on a GPU, float32 on CPU), "
            "'bfloat16', 'float16' or 'float32'.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    vllm_server_base_url: str | None = field(
        default=None,
        metadata={
            "help": "Decoder specs with backend=vllm send their requests to this vLLM server (serving "
            "model_name_or_path), e.g. http://localhost:8000; None: an in-process vLLM engine (one process only)."
        },
    )
    probe_facts: bool = field(
        default=False,
        metadata={
            "help": "Also probe the model's greedy answers to single facts a<op>b= (inside vs held out from the "
            "train split's steps); the task's probe in backtrack_trl.evaluation.fact_probe (Countdown has one)."
        },
    )
    probe_min_operand: int = field(default=1, metadata={"help": "Smallest operand of the fact probe."})
    probe_max_operand: int = field(default=20, metadata={"help": "Largest operand of the fact probe."})
    probe_max_facts: int = field(default=1000, metadata={"help": "Facts asked per group (inside / held out)."})
    probe_context: str = field(
        default="prompt",
        metadata={
            "help": "'prompt': the fact as the first step of a Countdown answer; 'bare': the fact line alone.",
            "choices": ["prompt", "bare"],
        },
    )
    metrics_dir: str | None = field(
        default="metrics",
        metadata={
            "help": "Folder of evaluate metrics: the task's metric there (e.g. metrics/countdown_accuracy) recomputes "
            "the accuracies from the raw answers; absent, the task's checkers give them alone."
        },
    )
    progress: bool = field(default=True, metadata={"help": "Show tqdm progress bars (main process)."})

    def __post_init__(self):
        if self.max_problems is not None and (isinstance(self.max_problems, bool) or self.max_problems < 1):
            raise ValueError(f"--max_problems must be a positive number of problems (or unset for all), got "
                             f"{self.max_problems!r}.")  # fmt: skip
        if self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens must be >= 1, got {self.max_new_tokens!r}.")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError(f"--dtype {self.dtype!r}: choose auto, bfloat16, float16 or float32.")
        if self.output_format not in ("jsonl", "parquet"):
            raise ValueError(f"--output_format {self.output_format!r}: choose 'jsonl' or 'parquet'.")
        for rule in self.selection_rules:
            if rule not in SELECTION_RULES:
                raise ValueError(f"--selection_rules: {rule!r} is not one of {', '.join(SELECTION_RULES)}.")
        check_decoder_specs(self.decoders)
        task = get_task(self.task)  # an unknown task fails here, listing the known ones
        if self.probe_facts and fact_probe_for(task) is None:
            raise ValueError(f"--probe_facts: task {task.name!r} has no fact probe (Countdown has one); set it false.")


def _write_generations(path: Path, rows: list[dict], output_format: str) -> Path:
    path = path.with_suffix(f".{output_format}")
    if output_format == "jsonl":
        atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    else:
        import pandas as pd

        # Nested lists and dicts as JSON text (a search tree's mixed ints and nulls do not fit one Arrow type).
        frame = pd.DataFrame(
            [{**row, "candidates": json.dumps(row["candidates"]), "tree": json.dumps(row.get("tree"))} for row in rows]
        )
        with atomic_path(path) as temporary:
            frame.to_parquet(temporary, index=False)
    return path


def load_eval_dataset(name: str, config: str | None, splits: list[str]):
    """The dataset with one clear error for a missing folder, a missing split or a split without rows."""
    from backtrack_trl.data.loading import load_hub_dataset, pick_split

    def explain(error: Exception) -> Exception | None:
        if "corresponds to no data" in str(error):  # datasets' words for a split whose files hold no rows
            return ValueError(
                f"--dataset_name {name!r}: a split has no rows ({error}). Rebuild the dataset with num_test > 0, or "
                "leave that split out of --splits."
            )
        if not Path(name).exists():
            return FileNotFoundError(
                f"--dataset_name {name!r}: no such folder, and not a dataset on the Hub (HF_HUB_OFFLINE="
                f"{os.environ.get('HF_HUB_OFFLINE', '0')}). Build it with recipes/build_dataset.py or fix the path."
            )
        return None

    dataset = load_hub_dataset(name, config, explain=explain)
    for split in splits:
        pick_split(
            dataset,
            split,
            f"--splits: {name!r} has no split {split!r}; it has {', '.join(sorted(dataset))}"
            f"{did_you_mean(split, dataset)}.",
        )
        if len(dataset[split]) == 0:
            raise ValueError(
                f"--splits: split {split!r} of {name!r} has no rows: leave it out of --splits or rebuild the data."
            )
    return dataset


def _vllm_client(args: EvaluationArguments, num_processes: int):
    """The vLLM engine of the backend=vllm specs (a server client, or an in-process engine) and the tokenizer."""
    from transformers import AutoTokenizer

    from backtrack_trl.decoding.vllm_backend import make_vllm_client

    if not args.vllm_server_base_url and num_processes > 1:
        raise ValueError(
            f"backend=vllm without --vllm_server_base_url in {num_processes} processes would start one vLLM engine "
            "per process: start one server (`make vllm-serve MODEL=<model folder>`, or `vllm serve <model folder> "
            "--enable-prefix-caching`) and pass --vllm_server_base_url, or evaluate in one process."
        )
    client = make_vllm_client(args.model_name_or_path, args.vllm_server_base_url)
    return client, AutoTokenizer.from_pretrained(args.model_name_or_path)


def process_device(requested: str | None, state):
    """This process's device: accelerate's when ``requested`` is None; a bare ``"cuda"`` means this process's own GPU
    (``cuda:<local rank>``, not every rank on ``cuda:0``); anything else as given."""
    if requested is None:
        return state.device
    if requested == "cuda":
        return f"cuda:{state.local_process_index}"
    return requested


def evaluate_decoders(args: EvaluationArguments) -> dict:
    """Run every decoder on every split; write the files (main process) and return the metrics."""
    import torch
    from accelerate import PartialState

    from backtrack_trl.decoding.api import build_decoder, load_model_and_tokenizer
    from backtrack_trl.distributed import solve_sharded

    # On a machine without GPUs, `accelerate launch` (torchrun) ranks must be told to use CPU + gloo.
    state = PartialState(cpu=args.device == "cpu" or (args.device is None and not torch.cuda.is_available()))
    device = process_device(args.device, state)
    backends = {parse_decoder_spec(spec)[2].get("backend", "hf") for spec in args.decoders}
    model = client = None
    if backends - {"vllm"}:
        model, tokenizer = load_model_and_tokenizer(
            args.model_name_or_path, device=device, dtype=args.dtype, option="--model_name_or_path"
        )
    if "vllm" in backends:
        client, tokenizer = _vllm_client(args, state.num_processes)
    dataset = load_eval_dataset(args.dataset_name, args.dataset_config, args.splits)
    task = get_task(args.task)
    metric = load_task_metric(task, args.metrics_dir) if state.is_main_process else None
    output_dir = Path(args.output_dir)
    metrics: dict = {}
    for split in args.splits:
        rows = dataset[split]
        if args.max_problems is not None:
            rows = rows.select(range(min(args.max_problems, len(rows))))
        problems = [task.problem_from_row(row) for row in rows.select_columns(list(task.problem_columns))]
        prompts = list(rows["prompt"])
        metrics[split] = {}
        for spec in args.decoders:
            label, method, options = parse_decoder_spec(spec)
            if method != "released":
                options.setdefault("max_new_tokens", args.max_new_tokens)
            if args.batch_size is not None and method != "released":
                options.setdefault("batch_size", args.batch_size)
            engine = client if options.get("backend") == "vllm" else model
            decoder = build_decoder(method, engine, tokenizer, task=task, **options)
            results = solve_sharded(
                state,
                decoder.solve,
                prompts,
                args.seed,
                args.progress,
                encode=lambda result: result.to_dict(),
                decode=SearchResult.from_dict,
            )
            if results is None:  # not the main process
                continue
            rules = args.selection_rules if method in RESCORABLE else ()
            decoder_metrics, verdicts = score_results(
                problems, results, rules, args.backtrack_weight, metric, options.get("duplicates", "mean"), task
            )
            decoder_metrics.update(method=method, options=options, spec=spec)
            metrics[split][label] = decoder_metrics
            generations = []
            for index, (problem, result, verdict) in enumerate(zip(problems, results, verdicts)):
                data = result.to_dict()
                generations.append({"index": index, **task.problem_to_row(problem), **verdict, **data})
            _write_generations(
                output_dir / "generations" / split / spec_file_name(label), generations, args.output_format
            )
    probe = None
    if args.probe_facts and state.is_main_process:
        if "train" not in dataset:
            raise ValueError(
                f"probe_facts needs the train split of {args.dataset_name} (its steps are the facts the model saw); "
                f"it has {sorted(dataset)}. Point dataset_name at the training data or set probe_facts: false."
            )
        options = {
            "min_operand": args.probe_min_operand,
            "max_operand": args.probe_max_operand,
            "max_facts": args.probe_max_facts,
            "context": args.probe_context,
            "seed": args.seed,
        }
        probe = fact_probe_for(task)(model, tokenizer, dataset["train"], options)
        atomic_write_text(output_dir / "fact_probe.json", json.dumps(probe, indent=2) + "\n")
    if state.is_main_process:
        atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        atomic_write_text(output_dir / "results.md", markdown_tables(metrics, args.model_name_or_path, probe, task))
        atomic_write_text(output_dir / "config.json", json.dumps(asdict(args), indent=2) + "\n")
        # Beside metrics.json, not inside it: its readers key on the splits. Records seed, threads, revision, versions.
        write_provenance(output_dir, seed=args.seed)
    state.wait_for_everyone()
    return metrics
