"""The harvest recipe: pool input, option checks, and the data-parallel harvest (2 processes write exactly the
dataset 1 process writes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _memorized_model import memorized_countdown_model
from datasets import Dataset, DatasetDict, load_dataset

from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.study.harvest import HarvestArguments, dataset_pool, read_pool_file, run_harvest, write_pool_file
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
    with pytest.raises(ValueError, match="Split 'dev' is not in"):
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


def test_a_test_problem_in_the_pool_is_refused(study, tmp_path):
    write_pool_file([TASK.problem_to_row(p) for p in POOL[:2] + TEST[:1]], tmp_path / "pool.jsonl")
    args = HarvestArguments(
        model_name_or_path=str(study / "model"), pool_file=str(tmp_path / "pool.jsonl"),
        test_dataset_name=str(study / "data"), output_dir=str(tmp_path / "out"), progress=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="1 pool problems are test problems"):
        run_harvest(args)


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


def test_study_options_of_the_vllm_harvest_are_checked():
    from backtrack_trl.study.runner import SelfImproveArguments

    with pytest.raises(ValueError, match="set search_backend: vllm too"):
        SelfImproveArguments(vllm_serve=True)
    with pytest.raises(ValueError, match="not both"):
        SelfImproveArguments(search_backend="vllm", vllm_serve=True, vllm_server_base_url="http://x:8000")
    with pytest.raises(ValueError, match="'CUDA_VISIBLE_DEVICES' is not KEY=VALUE"):
        SelfImproveArguments(search_backend="vllm", vllm_serve=True, vllm_server_env=["CUDA_VISIBLE_DEVICES"])
    with pytest.raises(ValueError, match="search_backend='tgi'"):
        SelfImproveArguments(search_backend="tgi")


def test_study_harvest_launches_the_recipe_with_a_server_per_round(tmp_path, monkeypatch):
    """The harvest stage: pool file written, `accelerate launch recipes/harvest.py` with the eval accelerate config,
    the search spec and, with vllm_serve, a server started on round k-1's model (its env and args) for the launch."""
    import contextlib

    from backtrack_trl.decoding import vllm_backend
    from backtrack_trl.study import runner as self_improve
    from backtrack_trl.study.runner import SelfImproveArguments, Study

    servers, commands = [], []

    @contextlib.contextmanager
    def fake_server(model, python, extra_args, env, log_file):
        servers.append({"model": str(model), "python": python, "args": extra_args, "env": env, "up": True})
        yield "http://127.0.0.1:5555"
        servers[-1]["up"] = False

    def fake_run(cmd, log, fds=()):
        assert servers and servers[-1]["up"]  # the server is up while the harvest runs
        commands.append(cmd)

    monkeypatch.setattr(vllm_backend, "launch_vllm_server", fake_server)
    monkeypatch.setattr(self_improve, "run_logged", fake_run)
    study = Study.__new__(Study)
    study.args = SelfImproveArguments(
        output_dir=str(tmp_path), search_backend="vllm", vllm_serve=True, vllm_python="/venv/bin/python",
        vllm_server_args="--data-parallel-size 4 --gpu-memory-utilization 0.9",
        vllm_server_env=["CUDA_VISIBLE_DEVICES=4,5,6,7"], eval_accelerate_config="accelerate_configs/ddp.yaml",
        search_n=16, search_b=1,
    )  # fmt: skip
    study.python, study.recipes, study.out, study.lock_fds = "python", tmp_path, tmp_path, ()
    study.task = TASK
    monkeypatch.setattr(study, "pool_problems", lambda k: [TASK.problem_to_row(p) for p in POOL[:3]], raising=False)
    monkeypatch.setattr(study, "round_model", lambda k: tmp_path / f"model_{k}", raising=False)
    study.harvest(2)
    assert servers == [{"model": str(tmp_path / "model_1"), "python": "/venv/bin/python", "up": False,
                        "args": ["--data-parallel-size", "4", "--gpu-memory-utilization", "0.9"],
                        "env": {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}}]  # fmt: skip
    (cmd,) = commands
    assert cmd[cmd.index("--config_file") + 1] == "accelerate_configs/ddp.yaml"
    assert cmd[cmd.index("--vllm_server_base_url") + 1] == "http://127.0.0.1:5555"
    search = cmd[cmd.index("--search") + 1]
    assert search.startswith("self_backtracking:") and "n=16" in search and "backend=vllm" in search
    assert cmd[cmd.index("--model_name_or_path") + 1] == str(tmp_path / "model_1")
    pool = read_pool_file(cmd[cmd.index("--pool_file") + 1], "countdown")
    assert pool == [TASK.problem_to_row(p) for p in POOL[:3]]
