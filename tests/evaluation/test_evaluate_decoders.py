"""The evaluation recipe: decoder specs, metrics (oracle, failure reasons, replayed selection rules), output files,
and 2 processes == 1 process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _decoding_utils import tiny_llama, tokenizer
from datasets import Dataset, DatasetDict

from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.decoding import Candidate, SearchResult
from backtrack_trl.evaluation import EvaluationArguments, evaluate_decoders, parse_decoder_spec, score_results
from backtrack_trl.tasks.countdown.format import GOAL_MARKER, Problem, format_prompt
from backtrack_trl.training.model_init import save_model_and_tokenizer


ROOT = Path(__file__).resolve().parents[2]
SEEN = [Problem((3, 5, 2), 16), Problem((12, 7, 1), 84), Problem((9, 9, 2), 83), Problem((4, 6, 1), 25)]
NEW = [Problem((3, 5, 1), 8), Problem((10, 2, 7), 27), Problem((1, 1, 1), 3)]


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")

    def rows(problems):
        return Dataset.from_list(
            [
                {
                    "numbers": list(p.numbers),
                    "target": p.target,
                    "prompt": format_prompt(p),
                    "completion": "",
                    "kind": "optimal",
                    "error_type": "",
                    "prefix": "",
                    "wrong_step": "",
                }  # fmt: skip
                for p in problems
            ]
        )

    write_hub_dataset(DatasetDict({"test_seen": rows(SEEN), "test_new": rows(NEW)}), root / "data")
    save_model_and_tokenizer(tiny_llama(hidden_size=32, layers=2), tokenizer(), root / "model")
    return root


def test_parse_decoder_spec():
    assert parse_decoder_spec("greedy") == ("greedy", "greedy", {})
    label, method, options = parse_decoder_spec("self_backtracking:n=32,b=1,selection=combined,top_p=0.9,tabu=true")
    assert (label, method) == (
        "self_backtracking:n=32,b=1,selection=combined,top_p=0.9,tabu=true",
        "self_backtracking",
    )
    assert options == {"n": 32, "b": 1, "selection": "combined", "top_p": 0.9, "tabu": True}
    assert parse_decoder_spec("beam:n=4,label=Beam 4")[0] == "Beam 4"
    with pytest.raises(ValueError, match="unknown method 'dfs'"):
        parse_decoder_spec("dfs:n=3")
    with pytest.raises(ValueError, match="'n' is not key=value"):
        parse_decoder_spec("beam:n")


def test_score_results_oracle_reasons_and_replayed_rules():
    problem = Problem((5, 3), 8)
    right = Candidate("5+3=8\n" + GOAL_MARKER, True, "goal", mean_logprob=-0.5, backtrack_value=-0.01)
    forged = Candidate("5*3=8\n" + GOAL_MARKER, True, "goal", mean_logprob=-0.1, backtrack_value=-2.0)
    stuck = Candidate("5-3=2\n<backtrack>", False, "backtrack", mean_logprob=-0.05)
    results = [
        SearchResult("p", forged.text, [right, forged, stuck], chosen_index=1, tokens_generated=30, rollbacks=1),
        SearchResult("p", stuck.text, [stuck], chosen_index=0, tokens_generated=10),
    ]
    metrics, verdicts = score_results([problem, problem], results, rules=("likelihood", "backtrack_value"))
    assert metrics["accuracy_strict"] == 0.0 and metrics["oracle_strict"] == 0.5
    assert metrics["reasons_strict"]["incorrect_result"] == 0.5
    assert metrics["reasons_strict"]["not_reached_target"] == 0.5
    assert metrics["selection_accuracy_strict"] == {"likelihood": 0.0, "backtrack_value": 0.5}
    assert metrics["ranking_auc"] == {"likelihood": 0.0, "backtrack_value": 1.0}  # one (right, forged) pair
    assert metrics["tokens_per_problem"] == 20 and metrics["rollbacks_per_problem"] == 0.5
    assert [v["oracle_strict"] for v in verdicts] == [True, False]


def test_evaluate_decoders_writes_generations_metrics_and_table(model_and_data, tmp_path):
    args = EvaluationArguments(
        model_name_or_path=str(model_and_data / "model"),
        dataset_name=str(model_and_data / "data"),
        decoders=["greedy", "self_backtracking:n=2,b=1,label=SB"],
        max_problems=2,
        max_new_tokens=8,
        output_dir=str(tmp_path / "out"),
        output_format="parquet",
        progress=False,
    )
    metrics = evaluate_decoders(args)
    assert set(metrics) == {"test_seen", "test_new"} and set(metrics["test_seen"]) == {"greedy", "SB"}
    assert metrics["test_seen"]["SB"]["num_problems"] == 2
    assert "selection_accuracy_strict" in metrics["test_seen"]["SB"]
    assert "selection_accuracy_strict" not in metrics["test_seen"]["greedy"]
    out = tmp_path / "out"
    assert json.loads((out / "metrics.json").read_text()) == metrics
    table = (out / "results.md").read_text()
    assert "| SB |" in table and "## test_new" in table
    import pandas as pd

    frame = pd.read_parquet(out / "generations" / "test_seen" / "SB.parquet")
    assert list(frame["index"]) == [0, 1] and {"completion", "correct_strict", "oracle_strict"} <= set(frame)
    from backtrack_trl.viz.search_tree import load_generation  # the search tree comes back from parquet too

    tree = load_generation(out / "generations" / "test_seen" / "SB.parquet", 1).tree
    assert tree["states"][0]["prefix"] == "" and len(tree["samples"]) >= 2


def _run(command, env):
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_give_the_same_results_as_one(model_and_data, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    common = [
        "recipes/evaluate_decoders.py",
        "--model_name_or_path", str(model_and_data / "model"),
        "--dataset_name", str(model_and_data / "data"),
        "--decoders", "greedy", "self_backtracking:n=3,b=1", "beam:n=2",
        "--max_new_tokens", "12",
        "--progress", "false",
    ]  # fmt: skip
    _run([sys.executable, *common, "--output_dir", str(tmp_path / "one")], env)
    accelerate = str(Path(sys.executable).parent / "accelerate")
    _run(
        [
            accelerate,
            "launch",
            "--config_file",
            "accelerate_configs/cpu_ddp.yaml",
            *common,
            "--output_dir",
            str(tmp_path / "two"),
        ],  # fmt: skip
        env,
    )
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "generations").rglob("*.jsonl"))
    assert len(files) == 6
    for name in files:
        one = [json.loads(line) for line in (tmp_path / "one" / name).read_text().splitlines()]
        two = [json.loads(line) for line in (tmp_path / "two" / name).read_text().splitlines()]
        assert len(one) == len(two) == {"test_seen": 4, "test_new": 3}[name.parts[1]]
        for a, b in zip(one, two):
            # Same texts, verdicts and counters; scores equal up to float rounding of different batch shapes.
            for key in ("index", "completion", "correct_strict", "reason_strict", "tokens_generated", "rollbacks"):
                assert a[key] == b[key], (name, key)
            assert [c["text"] for c in a["candidates"]] == [c["text"] for c in b["candidates"]]
            assert [c["mean_logprob"] for c in a["candidates"]] == pytest.approx(
                [c["mean_logprob"] for c in b["candidates"]], abs=1e-5
            )
