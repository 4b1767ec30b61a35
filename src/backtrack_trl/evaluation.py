"""Evaluate a model folder on the Countdown test splits with a list of decoders; write generations, metrics and a
markdown table. ``recipes/evaluate_decoders.py`` is the command-line front end; ``accelerate launch`` with several
processes shards the problems (``split_between_processes``) and gathers one result set (``gather_object``).

Decoders are given as compact specs ``method[:key=value,...]`` (a ``label=`` key renames the row), e.g.
``greedy``, ``beam:n=16``, ``best_of_n:n=8``, ``self_backtracking:n=32,b=1``, ``released:n=8,b=1``.

Every problem is sampled with the seed ``seed + its index in the split``, so results do not depend on the number of
processes or on the batch composition.

Usage:

```python
from backtrack_trl.evaluation import EvaluationArguments, evaluate_decoders

args = EvaluationArguments(
    model_name_or_path="models/countdown-tiny/backtrack-sft",
    dataset_name="data/countdown-tiny/backtrack",
    decoders=["greedy", "self_backtracking:n=8,b=1"],
    max_problems=50,
    output_dir="results/countdown-tiny/eval-quick",
)
metrics = evaluate_decoders(args)
print(metrics["test_seen"]["greedy"]["accuracy_strict"])
```
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .arithmetic import answer_arithmetic, limiting_factor, run_fact_probe
from .atomic_io import atomic_write_text
from .decoding.results import SearchResult
from .decoding.selection import SELECTION_RULES, fallback_index, rescore, select_index
from .tasks import get_task


DEFAULT_DECODERS = [
    "greedy",
    "beam:n=16",
    "best_of_n:n=8",
    "best_of_n:n=32",
    "self_backtracking:n=8,b=0",
    "self_backtracking:n=32,b=0",
    "self_backtracking:n=8,b=1",
    "self_backtracking:n=32,b=1",
]
# Decoders whose candidates carry per-sample scores, so other selection rules can be replayed on one run.
RESCORABLE = ("best_of_n", "self_backtracking")


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
    device: str | None = field(default=None, metadata={"help": "cpu / cuda; default: accelerate's device."})
    probe_facts: bool = field(
        default=False,
        metadata={
            "help": "Also probe the model's greedy answers to single facts a<op>b= (inside vs held out from the "
            "train split's steps); see backtrack_trl.arithmetic."
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
    progress: bool = field(default=True, metadata={"help": "Show tqdm progress bars (main process)."})

    def __post_init__(self):
        if self.max_problems is not None and (isinstance(self.max_problems, bool) or self.max_problems < 1):
            raise ValueError(f"--max_problems must be a positive number of problems (or unset for all), got "
                             f"{self.max_problems!r}.")  # fmt: skip
        if self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens must be >= 1, got {self.max_new_tokens!r}.")
        if self.output_format not in ("jsonl", "parquet"):
            raise ValueError(f"output_format must be 'jsonl' or 'parquet', got {self.output_format!r}.")
        for rule in self.selection_rules:
            if rule not in SELECTION_RULES:
                raise ValueError(f"selection_rules: {rule!r} is not one of {SELECTION_RULES}.")
        check_decoder_specs(self.decoders)


def _value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_decoder_spec(spec: str) -> tuple[str, str, dict]:
    """``"self_backtracking:n=32,b=1"`` -> ``(label, method, options)``; a clear error for a bad spec."""
    from .decoding.api import DECODERS

    method, _, rest = spec.partition(":")
    method = method.strip()
    if method not in DECODERS:
        raise ValueError(f"Decoder spec {spec!r}: unknown method {method!r}; choose one of {sorted(DECODERS)}.")
    options = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"Decoder spec {spec!r}: {item!r} is not key=value.")
        options[key.strip()] = _value(value.strip())
    label = str(options.pop("label", spec))
    return label, method, options


def check_decoder_specs(specs: list[str], where: str = "") -> None:
    """Parse every spec and check its options against its decoder (no model needed); one error naming the spec."""
    from .decoding.api import check_decoder_options

    for spec in specs:
        _, method, options = parse_decoder_spec(spec)
        try:
            check_decoder_options(method, options)
        except ValueError as error:
            raise ValueError(f"{where}Decoder spec {spec!r}: {error}") from None


def _write_generations(path: Path, rows: list[dict], output_format: str) -> Path:
    path = path.with_suffix(f".{output_format}")
    if output_format == "jsonl":
        atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    else:
        import pandas as pd

        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(handle)
        frame = pd.DataFrame([{**row, "candidates": json.dumps(row["candidates"])} for row in rows])
        frame.to_parquet(temporary, index=False)
        os.replace(temporary, path)
    return path


def _metric():
    """The countdown_accuracy evaluate metric from the repository's metrics/ folder, or None when unavailable."""
    folder = Path(__file__).resolve().parents[2] / "metrics" / "countdown_accuracy"
    if not (folder / "countdown_accuracy.py").is_file():
        return None
    import evaluate

    return evaluate.load(str(folder), "both")


def score_results(
    problems: list,
    results: list[SearchResult],
    rules=(),
    backtrack_weight: float = 1.0,
    metric=None,
    duplicates: str = "mean",
    task=None,
) -> tuple[dict, list[dict]]:
    """Metrics of one decoder on one split, and the per-problem verdicts (``task``: default Countdown)."""
    task = get_task(task or "countdown")
    modes, check = task.modes, task.check
    per_problem = []
    reasons = {mode: Counter() for mode in modes}
    oracle = 0
    replay = dict.fromkeys(rules, 0)
    # Within-problem ranking quality of each score: P(a correct answer outscores a wrong one of the same problem).
    pairs = {"likelihood": [0.0, 0], "backtrack_value": [0.0, 0]}
    for problem, result in zip(problems, results):
        verdicts = {mode: check(problem, result.completion, mode) for mode in modes}
        for mode, verdict in verdicts.items():
            reasons[mode][verdict.reason] += 1
        correct_candidates = [check(problem, c.text, "strict").correct for c in result.candidates]
        any_correct = any(ok and c.reached_goal for ok, c in zip(correct_candidates, result.candidates))
        oracle += any_correct
        if rules:
            answers = [(c, ok) for c, ok in zip(result.candidates, correct_candidates) if c.reached_goal]
            for name, attribute in (("likelihood", "mean_logprob"), ("backtrack_value", "backtrack_value")):
                for right, ok in answers:
                    for wrong, ok_wrong in answers:
                        if ok and not ok_wrong:
                            a, b = getattr(right, attribute), getattr(wrong, attribute)
                            pairs[name][0] += 1.0 if a > b else 0.5 if a == b else 0.0
                            pairs[name][1] += 1
        for rule in rules:
            scores = rescore(result.candidates, rule, duplicates, backtrack_weight)
            index = select_index(result.candidates, scores)
            index = fallback_index(result.candidates) if index is None else index
            replay[rule] += bool(index is not None and correct_candidates[index])
        row = {}
        for mode, verdict in verdicts.items():
            row.update({f"correct_{mode}": verdict.correct, f"reason_{mode}": verdict.reason})
        per_problem.append({**row, "oracle_strict": any_correct})
    count = max(len(problems), 1)
    metrics = {"num_problems": len(problems)}
    metrics.update({f"accuracy_{mode}": reasons[mode]["correct"] / count for mode in modes})
    metrics["oracle_strict"] = oracle / count
    metrics.update({f"reasons_{mode}": {r: reasons[mode][r] / count for r in task.reasons} for mode in modes})
    metrics.update(
        tokens_per_problem=sum(r.tokens_generated for r in results) / count,
        forward_passes_per_problem=sum(r.forward_passes for r in results) / count,
        rollbacks_per_problem=sum(r.rollbacks for r in results) / count,
        seconds_per_problem=sum(r.wall_time for r in results) / count,
    )
    if task.name == "countdown":  # step arithmetic is Countdown's own diagnosis
        metrics["arithmetic"] = answer_arithmetic(problems, [r.completion for r in results])
    if rules:
        metrics["selection_accuracy_strict"] = {rule: replay[rule] / count for rule in rules}
        metrics["ranking_auc"] = {name: (wins / total if total else None) for name, (wins, total) in pairs.items()}
    if metric is not None and problems:
        # The evaluate metric is the reference implementation of the reported accuracies.
        computed = metric.compute(
            predictions=[r.completion for r in results],
            references=[{"numbers": list(p.numbers), "target": p.target} for p in problems],
        )
        metrics["accuracy_strict"] = computed["strict_accuracy"]
        metrics["accuracy_official"] = computed["official_accuracy"]
    return metrics, per_problem


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def best_decoder(by_decoder: dict) -> str | None:
    """The label of the decoder with the highest strict accuracy (first one on ties)."""
    return max(by_decoder, key=lambda label: by_decoder[label]["accuracy_strict"], default=None)


def limit_line(by_decoder: dict) -> str:
    """``What limits <best decoder>: ...`` for one split (see :func:`backtrack_trl.arithmetic.limiting_factor`)."""
    label = best_decoder(by_decoder)
    if label is None:
        return ""
    m = by_decoder[label]
    arithmetic = m.get("arithmetic", {})
    return f"What limits `{label}` (best here): " + limiting_factor(
        arithmetic.get("last_step_right"), m["accuracy_strict"], m.get("oracle_strict")
    )


def probe_table(probe: dict) -> list[str]:
    """Markdown lines of the single-fact probe."""
    lines = [
        "",
        f"## Single-step facts a<op>b= (greedy, operands {probe['min_operand']}..{probe['max_operand']}, "
        f"context `{probe['context']}`)",
        "",
        "| Facts | Asked (of) | Right % | + | - | * | / |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, title in (("inside", "in the training steps"), ("held_out", "held out")):
        group = probe[name]
        ops = " | ".join(_pct(group["by_op"][op]) for op in ("+", "-", "*", "/"))
        lines.append(f"| {title} | {group['facts']} ({group['of']}) | {_pct(group['accuracy'])} | {ops} |")
    return lines


def markdown_tables(metrics: dict, model: str, probe: dict | None = None) -> str:
    """Markdown: one accuracy table per split (with the arithmetic of the chosen answers and what limits the best
    decoder), then the selection-rule table where available, then the fact probe if it ran."""
    lines = [f"# Decoder evaluation: `{model}`", ""]
    lines.append(
        "Accuracy in % (strict checker / official-compatible checker); oracle = some candidate is strictly correct. "
        "Failure columns: share of problems per strict-checker reason. Time is wall-clock per problem. Arithmetic of "
        "the chosen answers: share of written steps whose result is the true result (all / first / last step), and "
        "share of answers whose last step copies the target with wrong arithmetic."
    )
    for split, by_decoder in metrics.items():
        lines += ["", f"## {split}", ""]
        lines.append(
            "| Decoder | Strict % | Official % | Oracle % | not reached | wrong arithmetic | unknown numbers | "
            "bad format | Right steps % | Right first % | Right last % | Copies target % | Tokens / problem | "
            "Rollbacks / problem | ms / problem |"
        )
        lines.append("|---|" + "---|" * 14)
        for label, m in by_decoder.items():
            r, a = m["reasons_strict"], m.get("arithmetic", {})
            lines.append(
                f"| {label} | {100 * m['accuracy_strict']:.1f} | {100 * m['accuracy_official']:.1f} | "
                f"{100 * m['oracle_strict']:.1f} | {100 * r['not_reached_target']:.1f} | "
                f"{100 * r['incorrect_result']:.1f} | {100 * r['unknown_numbers']:.1f} | "
                f"{100 * r['invalid_format']:.1f} | {_pct(a.get('step_right'))} | {_pct(a.get('first_step_right'))} | "
                f"{_pct(a.get('last_step_right'))} | {_pct(a.get('target_copy'))} | {m['tokens_per_problem']:.0f} | "
                f"{m['rollbacks_per_problem']:.2f} | {1000 * m['seconds_per_problem']:.1f} |"
            )
        if by_decoder:
            lines += ["", limit_line(by_decoder)]
        rescored = {label: m for label, m in by_decoder.items() if "selection_accuracy_strict" in m}
        if rescored:
            rules = list(next(iter(rescored.values()))["selection_accuracy_strict"])
            lines += ["", f"Selection rule replayed on the same candidates ({split}, strict %):", ""]
            lines.append("| Decoder | " + " | ".join(rules) + " | Oracle | AUC likelihood | AUC backtrack value |")
            lines.append("|---|" + "---|" * (len(rules) + 3))
            for label, m in rescored.items():
                cells = " | ".join(f"{100 * m['selection_accuracy_strict'][rule]:.1f}" for rule in rules)
                auc = m.get("ranking_auc", {})
                aucs = " | ".join(
                    "-" if auc.get(name) is None else f"{auc[name]:.2f}" for name in ("likelihood", "backtrack_value")
                )
                lines.append(f"| {label} | {cells} | {100 * m['oracle_strict']:.1f} | {aucs} |")
            lines += [
                "",
                "AUC: over pairs (correct answer, wrong answer) of the same problem, how often the score ranks the "
                "correct one higher (0.5 = no signal).",
            ]
    if probe:
        lines += probe_table(probe)
    return "\n".join(lines) + "\n"


def load_eval_dataset(name: str, config: str | None, splits: list[str]):
    """The dataset with one clear error for a missing folder, a missing split or a split without rows."""
    import datasets

    try:
        dataset = datasets.load_dataset(name, config)
    except Exception as error:
        if "corresponds to no data" in str(error):  # datasets' words for a split whose files hold no rows
            raise ValueError(
                f"A split of {name!r} has no rows ({error}). Rebuild the dataset with num_test > 0, or leave that "
                f"split out of --splits."
            ) from None
        if not Path(name).exists():
            raise FileNotFoundError(
                f"--dataset_name {name!r}: no such folder, and not a dataset on the Hub (HF_HUB_OFFLINE="
                f"{os.environ.get('HF_HUB_OFFLINE', '0')}). Build it with recipes/build_dataset.py or fix the path."
            ) from None
        raise
    for split in splits:
        if split not in dataset:
            raise ValueError(f"Split {split!r} is not in {name} (splits: {sorted(dataset)}).")
        if len(dataset[split]) == 0:
            raise ValueError(f"Split {split!r} of {name} has no rows: leave it out of --splits or rebuild the data.")
    return dataset


def evaluate_decoders(args: EvaluationArguments) -> dict:
    """Run every decoder on every split; write the files (main process) and return the metrics."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from .decoding.api import build_decoder, load_model_and_tokenizer

    # On a machine without GPUs, `accelerate launch` (torchrun) ranks must be told to use CPU + gloo.
    state = PartialState(cpu=args.device == "cpu" or (args.device is None and not torch.cuda.is_available()))
    device = args.device or state.device
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, device=device)
    dataset = load_eval_dataset(args.dataset_name, args.dataset_config, args.splits)
    task = get_task(args.task)
    metric = _metric() if state.is_main_process and task.name == "countdown" else None
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
            decoder = build_decoder(method, model, tokenizer, task=task, **options)
            indices = list(range(len(prompts)))
            with state.split_between_processes(indices) as shard:
                shard = list(shard)
                local = decoder.solve(
                    [prompts[i] for i in shard],
                    seeds=[args.seed + i for i in shard],
                    progress=args.progress and state.is_main_process,
                )
                local = [(i, r.to_dict()) for i, r in zip(shard, local)]
            gathered = gather_object(local) if state.num_processes > 1 else local
            if not state.is_main_process:
                continue
            gathered = sorted(gathered, key=lambda item: item[0])
            results = [SearchResult.from_dict(data) for _, data in gathered]
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
            safe = label.replace("/", "_").replace(":", "_").replace(",", "_").replace("=", "")
            _write_generations(output_dir / "generations" / split / safe, generations, args.output_format)
    probe = None
    if args.probe_facts and state.is_main_process and task.name == "countdown":
        if "train" not in dataset:
            raise ValueError(
                f"probe_facts needs the train split of {args.dataset_name} (its steps are the facts the model saw); "
                f"it has {sorted(dataset)}. Point dataset_name at the training data or set probe_facts: false."
            )
        train = dataset["train"]
        num_numbers = len(train[0]["numbers"]) if len(train) else 3
        # The facts a model was trained to write: the steps of the solutions (wrong steps may be masked).
        kinds = train["kind"] if "kind" in train.column_names else ["optimal"] * len(train)
        solutions = [completion for completion, kind in zip(train["completion"], kinds) if kind == "optimal"]
        probe = run_fact_probe(
            model,
            tokenizer,
            solutions,
            min_operand=args.probe_min_operand,
            max_operand=args.probe_max_operand,
            max_facts=args.probe_max_facts,
            context=args.probe_context,
            num_numbers=num_numbers,
            seed=args.seed,
        )
        atomic_write_text(output_dir / "fact_probe.json", json.dumps(probe, indent=2) + "\n")
    if state.is_main_process:
        atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        atomic_write_text(output_dir / "results.md", markdown_tables(metrics, args.model_name_or_path, probe))
        atomic_write_text(output_dir / "config.json", json.dumps(asdict(args), indent=2) + "\n")
    state.wait_for_everyone()
    return metrics
