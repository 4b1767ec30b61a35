"""The harvest: pool input, option checks, the strict filter, and the data-parallel harvest (2 processes write
exactly the dataset 1 process writes)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _memorized_model import memorized_countdown_model
from datasets import Dataset, DatasetDict, load_dataset

from backtrack_trl.data import hub_layout
from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.decoding.results import Candidate, SearchResult
from backtrack_trl.study.harvest import (
    HarvestArguments,
    dataset_pool,
    dataset_test_keys,
    pick_path,
    read_pool_file,
    run_harvest,
    write_pool_file,
)
from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.countdown.format import Problem


ROOT = Path(__file__).resolve().parents[2]
TASK = get_task("countdown")
POOL = [Problem((3, 5, 2), 16), Problem((12, 7, 1), 84), Problem((9, 9, 2), 83), Problem((4, 6, 1), 25),
        Problem((3, 5, 1), 8), Problem((10, 2, 7), 27), Problem((6, 4, 3), 30), Problem((8, 2, 5), 11)]  # fmt: skip
TEST = [Problem((1, 1, 1), 3), Problem((2, 3, 4), 24)]


def _rows(problems):
    return [TASK.optimal_row(p, TASK.solve(p)) for p in problems]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny model that has half-memorised the pool's solutions (so the search keeps some paths, not all), and a
    dataset whose train split is the pool."""
    root = tmp_path_factory.mktemp("harvest")
    memorized_countdown_model(root / "model", POOL, steps=60)
    splits = {"train": _rows(POOL) * 2, "test_seen": _rows(TEST[:1]), "test_new": _rows(TEST[1:])}
    write_hub_dataset(DatasetDict({k: Dataset.from_list(v) for k, v in splits.items()}), root / "data")
    write_pool_file([TASK.problem_to_row(p) for p in POOL], root / "pool.jsonl")
    return root


def test_pool_file_round_trip_and_errors(tmp_path):
    rows = [TASK.problem_to_row(p) for p in POOL[:2]]
    write_pool_file(rows, tmp_path / "pool.jsonl")
    assert read_pool_file(tmp_path / "pool.jsonl", "countdown") == rows
    (tmp_path / "bad.jsonl").write_text('{"numbers": [1, 2]}\n')
    with pytest.raises(ValueError, match=r"line 1 lacks the countdown problem column\(s\) \['target'\]"):
        read_pool_file(tmp_path / "bad.jsonl", "countdown")
    (tmp_path / "broken.jsonl").write_text('{"numbers": [1, 2], "target": 3}\n{oops\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_pool_file(tmp_path / "broken.jsonl", "countdown")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_pool_file(tmp_path / "missing.jsonl", "countdown")


def test_dataset_pool_takes_distinct_problems_in_order(study):
    rows = dataset_pool(study / "data", "train", 3, "countdown")
    assert rows == [TASK.problem_to_row(p) for p in POOL[:3]]
    assert len(dataset_pool(study / "data", "train", None, "countdown")) == len(POOL)  # each problem twice in train
    with pytest.raises(ValueError, match="--dataset_split 'dev' is not a split of --dataset_name .*; it has .*train"):
        dataset_pool(study / "data", "dev", 3, "countdown")


def test_arguments_name_the_bad_option(tmp_path):
    with pytest.raises(ValueError, match="exactly one of --pool_file"):
        HarvestArguments(output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="the harvest searches with one of"):
        HarvestArguments(pool_file="p.jsonl", search="beam:n=4")
    with pytest.raises(ValueError, match=r"b \(backtracking rounds\) must be"):
        HarvestArguments(pool_file="p.jsonl", search="self_backtracking:n=4,b=-1")
    with pytest.raises(ValueError, match="backend='vllm' does not support tabu"):
        HarvestArguments(pool_file="p.jsonl", search="self_backtracking:n=4,backend=vllm,tabu=true")
    args = HarvestArguments(pool_file="p.jsonl", search="best_of_n:n=4", vllm_server_base_url="http://x:8000")
    assert args.search_options() == {
        "method": "best_of_n", "n": 4, "backend": "vllm", "vllm_server_base_url": "http://x:8000"
    }  # fmt: skip


@pytest.mark.parametrize("name", ["", " ", "round 1", "round/1", "../round_1", ".round_1", "round_1\n", "data", "r:1"])
def test_a_config_name_a_dataset_cannot_hold_is_refused_with_the_options(name):
    # --config_name '' ran the whole search before failing: the name is checked with the other options.
    with pytest.raises(ValueError, match=rf"--config_name {re.escape(repr(name))} cannot name a dataset config"):
        HarvestArguments(pool_file="p.jsonl", config_name=name)


@pytest.mark.parametrize("name", ["round_1", "control-2", "v1.5", "default"])
def test_config_names_the_hub_accepts_pass(name):
    assert HarvestArguments(pool_file="p.jsonl", config_name=name).config_name == name


def test_a_test_problem_in_the_pool_is_refused(study, tmp_path):
    write_pool_file([TASK.problem_to_row(p) for p in POOL[:2] + TEST[:1]], tmp_path / "pool.jsonl")
    args = HarvestArguments(
        model_name_or_path=str(study / "model"), pool_file=str(tmp_path / "pool.jsonl"),
        test_dataset_name=str(study / "data"), output_dir=str(tmp_path / "out"), progress=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="1 of the 3 problems of --pool_file .* are test problems"):
        run_harvest(args)


def test_a_pool_file_is_checked_against_the_test_splits_of_the_dataset_it_extends(study, tmp_path, caplog):
    # No --test_dataset_name: the test splits of the --output_dir dataset still keep their problems out.
    data = tmp_path / "data"
    shutil.copytree(study / "data", data)
    write_pool_file([TASK.problem_to_row(p) for p in POOL[:2] + TEST], tmp_path / "pool.jsonl")
    args = HarvestArguments(
        model_name_or_path=str(tmp_path / "no_model"), pool_file=str(tmp_path / "pool.jsonl"),
        output_dir=str(data), config_name="round_1", progress=False,
    )  # fmt: skip
    with pytest.raises(ValueError) as error:
        run_harvest(args)
    message = str(error.value)
    assert f"2 of the 4 problems of --pool_file '{tmp_path / 'pool.jsonl'}' are test problems of '{data}'" in message
    assert 'e.g. {"numbers": [1, 1, 1], "target": 3}' in message and "Remove them from the pool file" in message
    assert hub_layout.dataset_configs(data) == ["default"]  # nothing written
    # a pool drawn from a test split of --dataset_name
    args = HarvestArguments(
        model_name_or_path=str(tmp_path / "no_model"), dataset_name=str(study / "data"), dataset_split="test_new",
        output_dir=str(tmp_path / "new"), progress=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"1 of the 1 problems of the pool \(split 'test_new' of --dataset_name"):
        run_harvest(args)
    # test splits of any config of the output dataset count (here a test split of config `extra`)
    extra = DatasetDict({"train": Dataset.from_list(_rows(POOL[7:])), "test": Dataset.from_list(_rows(POOL[:1]))})
    write_hub_dataset(extra, data, config_name="extra")
    assert TASK.problem_key(POOL[0]) in dataset_test_keys(data, TASK)
    # nothing to check against: a warning names the option, then the run goes on (to the missing model here)
    write_pool_file([TASK.problem_to_row(p) for p in POOL[:2]], tmp_path / "clean.jsonl")
    args = HarvestArguments(
        model_name_or_path=str(tmp_path / "no_model"), pool_file=str(tmp_path / "clean.jsonl"),
        output_dir=str(tmp_path / "new"), progress=False,
    )  # fmt: skip
    with caplog.at_level("WARNING"), pytest.raises(FileNotFoundError, match="no_model"):
        run_harvest(args)
    assert "pass --test_dataset_name" in caplog.text


def test_harvest_into_a_datasets_own_config_is_refused_before_the_search(study, tmp_path):
    # `--output_dir <the dataset> --config_name default` used to replace the dataset: its test splits were gone.
    readme = (study / "data" / "README.md").read_text()
    args = HarvestArguments(
        model_name_or_path=str(tmp_path / "no_model_needed"), dataset_name=str(study / "data"),
        output_dir=str(study / "data"), config_name="default", progress=False,
    )  # fmt: skip
    with pytest.raises(FileExistsError, match=r"config 'default' .*\['test_seen', 'test_new'\] would be lost"):
        run_harvest(args)
    assert (study / "data" / "README.md").read_text() == readme
    assert set(load_dataset(str(study / "data"))) == {"train", "test_seen", "test_new"}


def _harvest_command(study, out, launcher):
    return [
        *launcher, "recipes/harvest.py",
        "--model_name_or_path", str(study / "model"),
        "--pool_file", str(study / "pool.jsonl"),
        "--test_dataset_name", str(study / "data"),
        "--output_dir", str(out / "rounds"), "--config_name", "round_1",
        "--search", "self_backtracking:n=4,b=1,max_new_tokens=32,batch_size=3",
        "--seed", "7", "--stats_file", str(out / "harvest.json"), "--progress", "false",
    ]  # fmt: skip


@pytest.mark.slow
def test_two_processes_write_exactly_the_dataset_one_process_writes(study, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    accelerate = str(Path(sys.executable).parent / "accelerate")
    runs = {
        "one": [sys.executable],
        "two": [accelerate, "launch", "--config_file", "accelerate_configs/cpu_ddp.yaml"],
    }
    for name, launcher in runs.items():
        command = _harvest_command(study, tmp_path / name, launcher)
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (load_dataset(str(tmp_path / n / "rounds"), "round_1", split="train").to_list() for n in runs)
    assert one == two
    assert 0 < len(one) < len(POOL)  # a real filter: some pool problems kept, not all
    stats = {n: json.loads((tmp_path / n / "harvest.json").read_text()) for n in runs}
    assert stats["one"]["processes"] == 1 and stats["two"]["processes"] == 2
    for key in ("pool_problems", "kept", "search_accuracy", "oracle_accuracy", "tokens_generated"):
        assert stats["one"][key] == stats["two"][key], key
    for row in one:
        assert TASK.check(TASK.problem_from_row(row), row["completion"], mode="strict").correct


# -- the filter: one strict-correct path per problem ---------------------------------------------------------------
PROBLEM = Problem((3, 5, 2), 16)
RIGHT = "5+3=8\n8*2=16\nGoal Reached!"
FORGED = "5*3=15\n15+2=16\nGoal Reached!"  # wrong arithmetic that "reaches" the target


def _result(chosen: str, candidates: list[tuple[str, float]]) -> SearchResult:
    cands = [Candidate(text=t, reached_goal=t.endswith("Goal Reached!"), end_reason="goal", mean_logprob=s, score=s)
             for t, s in candidates]  # fmt: skip
    return SearchResult(prompt="", completion=chosen, candidates=cands)


def test_best_correct_skips_higher_scoring_forgery():
    result = _result(FORGED, [(FORGED, -0.1), (RIGHT, -0.5), ("3+2=5\n<backtrack>", 0.0)])
    assert pick_path(PROBLEM, result, "best_correct") == RIGHT
    assert pick_path(PROBLEM, result, "chosen") is None  # the chosen answer is the forgery


def test_chosen_keeps_a_correct_choice_and_rejects_backtrack_text():
    assert pick_path(PROBLEM, _result(RIGHT, [(RIGHT, -0.2)]), "chosen") == RIGHT
    assert pick_path(PROBLEM, _result(RIGHT + "\n<backtrack>", []), "chosen") is None
    with pytest.raises(ValueError, match="keep="):
        pick_path(PROBLEM, _result(RIGHT, []), "first")


def test_harvest_that_keeps_nothing_stops_with_the_search_accuracy(tmp_path):
    from backtrack_trl.study.harvest import EmptyHarvestError, harvest
    from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer
    from backtrack_trl.training.model_init import init_tiny_llama, save_model_and_tokenizer

    tokenizer = build_countdown_tokenizer()
    model = init_tiny_llama(
        tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    save_model_and_tokenizer(model, tokenizer, tmp_path / "random")  # an untrained model solves nothing
    problems = [{"numbers": [3, 5, 2], "target": 16}, {"numbers": [4, 6, 1], "target": 25}]
    with pytest.raises(EmptyHarvestError, match=r"accepted no path .* on 2 pool problems \(search accuracy 0\.0%"):
        harvest(tmp_path / "random", problems, tmp_path / "rounds", "round_1", {"n": 2, "b": 0, "max_new_tokens": 8},
                progress=False)  # fmt: skip
    assert not (tmp_path / "rounds").exists()  # nothing half-written
    with pytest.raises(ValueError, match="pool problems are test problems"):
        harvest(tmp_path / "random", problems, tmp_path / "rounds", "round_1", {"n": 2, "b": 0},
                forbidden_keys={((2, 3, 5), 16)}, progress=False)  # fmt: skip
