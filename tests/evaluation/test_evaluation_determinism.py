"""Evaluating twice gives identical answers, sampled decoders included: problem i is sampled with ``seed + i``, never
with the global RNG's state; and the run records its provenance beside metrics.json."""

import json
import random
from pathlib import Path

import pytest
import torch
from _decoding_utils import tiny_llama, tokenizer
from datasets import Dataset, DatasetDict

from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.evaluation import EvaluationArguments, evaluate_decoders
from backtrack_trl.tasks.countdown.format import Problem, format_prompt
from backtrack_trl.training.model_init import save_model_and_tokenizer


PROBLEMS = [Problem((3, 5, 2), 16), Problem((12, 7, 1), 84), Problem((9, 9, 2), 83), Problem((4, 6, 1), 25)]
DECODERS = ["greedy", "self_backtracking:n=4,b=1", "best_of_n:n=4"]
TIMINGS = ("wall_time", "seconds_per_problem")


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_determinism")
    rows = [{"numbers": list(p.numbers), "target": p.target, "prompt": format_prompt(p), "completion": "",
             "kind": "optimal", "error_type": "", "prefix": "", "wrong_step": ""} for p in PROBLEMS]  # fmt: skip
    write_hub_dataset(DatasetDict({"test_seen": Dataset.from_list(rows)}), root / "data")
    save_model_and_tokenizer(tiny_llama(hidden_size=32, layers=2), tokenizer(), root / "model")
    return root


def _evaluate(root: Path, output_dir: Path, seed: int = 0) -> Path:
    args = EvaluationArguments(
        model_name_or_path=str(root / "model"), dataset_name=str(root / "data"), splits=["test_seen"],
        decoders=DECODERS, max_new_tokens=16, seed=seed, output_dir=str(output_dir), progress=False,
    )  # fmt: skip
    evaluate_decoders(args)
    return output_dir


def _answers(output_dir: Path) -> dict[str, list[dict]]:
    """Every generations file of a run, without its timings (the only fields allowed to change)."""
    answers = {}
    for path in sorted((output_dir / "generations").rglob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        answers[str(path.relative_to(output_dir))] = [
            {k: v for k, v in row.items() if k not in TIMINGS} for row in rows
        ]
    return answers


def _metrics(output_dir: Path) -> dict:
    metrics = json.loads((output_dir / "metrics.json").read_text())
    return {split: {label: {k: v for k, v in m.items() if k not in TIMINGS} for label, m in by_label.items()}
            for split, by_label in metrics.items()}  # fmt: skip


def test_evaluating_twice_gives_identical_answers_including_sampled_decoders(model_and_data, tmp_path):
    first = _evaluate(model_and_data, tmp_path / "first")
    # Disturb the global RNGs: a decoder that drew from them instead of its per-problem seed would now answer otherwise.
    torch.manual_seed(12345), random.seed(12345), torch.rand(17)
    second = _evaluate(model_and_data, tmp_path / "second")
    answers = _answers(first)
    assert len(answers) == len(DECODERS) and all(len(rows) == len(PROBLEMS) for rows in answers.values())
    assert answers == _answers(second)
    assert _metrics(first) == _metrics(second)
    # The comparison can see a change: another seed samples other candidates (greedy stays the same).
    other = _answers(_evaluate(model_and_data, tmp_path / "seed_1", seed=1))
    sampled = [name for name in answers if "greedy" not in name]
    assert all(other[name] != answers[name] for name in sampled)
    assert all(other[name] == answers[name] for name in answers if name not in sampled)


def test_the_evaluation_records_its_provenance_beside_the_metrics(model_and_data, tmp_path):
    output_dir = tmp_path / "out"
    args = EvaluationArguments(
        model_name_or_path=str(model_and_data / "model"), dataset_name=str(model_and_data / "data"),
        splits=["test_seen"], decoders=["greedy"], max_problems=1, max_new_tokens=4, seed=7,
        output_dir=str(output_dir), progress=False,
    )  # fmt: skip
    evaluate_decoders(args)
    info = json.loads((output_dir / "provenance.json").read_text())
    assert info["seed"] == 7 and info["torch_threads"] == torch.get_num_threads()
    assert {"revision", "omp_num_threads", "torch", "transformers", "trl", "python"} <= set(info)
    assert set(json.loads((output_dir / "metrics.json").read_text())) == {"test_seen"}  # its shape is unchanged
