"""The vLLM backend against a real vLLM server (the CPU build, in its own environment: ``make vllm-env``): greedy
answers identical to the HF backend, search accuracy within noise, the harvest and the evaluation through the server.

Slow: the server takes about a minute to start on CPU. Without ``.venv-vllm`` (or ``BACKTRACK_VLLM_PYTHON``) these
tests skip, saying how to install it.
"""

import json
import os
import random
from pathlib import Path

import pytest
from _memorized_model import memorized_countdown_model
from datasets import Dataset, DatasetDict, load_dataset

from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.decoding import GreedyDecoder, SelfBacktrackingDecoder, load_model_and_tokenizer
from backtrack_trl.decoding.vllm_http import VLLMServer
from backtrack_trl.decoding.vllm_launch import launch_vllm_server
from backtrack_trl.study.harvest import HarvestArguments, run_harvest, write_pool_file
from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.countdown.format import Problem


pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("BACKTRACK_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
TASK = get_task("countdown")


def _problems(count, seed):
    rng, out = random.Random(seed), []
    while len(out) < count:
        numbers = tuple(rng.randint(1, 12) for _ in range(3))
        target = rng.randint(2, 40)
        problem = Problem(numbers, target)
        if TASK.solve(problem) is not None and problem not in out:
            out.append(problem)
    return out


SEEN = _problems(40, 0)
UNSEEN = [p for p in _problems(200, 1) if p not in SEEN][:160]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if not VLLM_PYTHON.exists():
        pytest.skip(f"no vLLM environment at {VLLM_PYTHON}: `make vllm-env` installs the CPU build of vLLM there")
    root = tmp_path_factory.mktemp("vllm")
    model = memorized_countdown_model(root / "model", SEEN, steps=120, backtrack_rows=True)
    args = ["--dtype", "float32", "--max-model-len", "128", "--no-enable-chunked-prefill",
            "--max-num-batched-tokens", "8192"]  # fmt: skip
    env = {"OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    with launch_vllm_server(
        model, python=str(VLLM_PYTHON), extra_args=args, env=env, log_file=root / "server.log"
    ) as url:
        yield root, model, url


def _accuracy(problems, results):
    return (
        100.0
        * sum(TASK.check(p, r.completion, mode="strict").correct for p, r in zip(problems, results))
        / len(problems)
    )


def test_greedy_is_identical_on_both_backends(served):
    _, model, url = served
    problems = SEEN + UNSEEN
    hf = GreedyDecoder.from_pretrained(str(model)).solve(problems)
    vllm = GreedyDecoder.from_pretrained(str(model), vllm_server_base_url=url).solve(problems)
    assert [r.completion for r in vllm] == [r.completion for r in hf]
    assert [r.tokens_generated for r in vllm] == [r.tokens_generated for r in hf]
    print(f"greedy on {len(problems)} problems: {_accuracy(problems, hf):.1f}% strict on both backends")
    assert 0 < _accuracy(problems, hf) < 100  # a model that solves some problems, not all


def test_search_accuracy_agrees_within_noise(served):
    _, model, url = served
    problems = SEEN + UNSEEN
    options = {"n": 8, "b": 1, "max_new_tokens": 48}
    hf = SelfBacktrackingDecoder.from_pretrained(str(model), **options).solve(problems)
    vllm = SelfBacktrackingDecoder.from_pretrained(str(model), vllm_server_base_url=url, **options).solve(problems)
    hf_accuracy, vllm_accuracy = _accuracy(problems, hf), _accuracy(problems, vllm)
    print(f"search n=8 b=1 on {len(problems)} problems: HF {hf_accuracy:.1f}%, vLLM {vllm_accuracy:.1f}% strict")
    # Different random draws: a difference of two proportions on 200 problems has a standard error near 4-5 points.
    assert abs(hf_accuracy - vllm_accuracy) <= 10, (hf_accuracy, vllm_accuracy)
    assert vllm_accuracy > 0
    for result in vllm:
        assert all(c.end_reason in ("goal", "backtrack", "eos", "length") for c in result.candidates)
    # The search rolled back on the server too (the <backtrack> token is sampled, and its states re-sent).
    assert sum(r.rollbacks for r in vllm) > 0 or all(r.candidates and r.candidates[0].reached_goal for r in vllm)
    # Per-position log-probabilities came back for the selection rule.
    assert all(c.mean_logprob < 0 for r in vllm for c in r.candidates)


def test_harvest_through_the_server(served, tmp_path):
    _, model, url = served
    write_pool_file([TASK.problem_to_row(p) for p in SEEN], tmp_path / "pool.jsonl")
    args = HarvestArguments(
        model_name_or_path=str(model), pool_file=str(tmp_path / "pool.jsonl"), output_dir=str(tmp_path / "rounds"),
        search="self_backtracking:n=4,b=1,max_new_tokens=48,backend=vllm", vllm_server_base_url=url, progress=False,
    )  # fmt: skip
    stats = run_harvest(args)
    kept = load_dataset(str(tmp_path / "rounds"), "round_1", split="train")
    assert stats["kept"] == len(kept) > 0
    assert "backend=vllm" in (tmp_path / "rounds" / "README.md").read_text()


def test_evaluation_recipe_with_backend_vllm(served, tmp_path):
    from backtrack_trl.evaluation import EvaluationArguments, evaluate_decoders

    _, model, url = served
    rows = [TASK.optimal_row(p, TASK.solve(p)) for p in SEEN[:20]]
    write_hub_dataset(DatasetDict({"test_seen": Dataset.from_list(rows)}), tmp_path / "data")
    args = EvaluationArguments(
        model_name_or_path=str(model), dataset_name=str(tmp_path / "data"), splits=["test_seen"],
        decoders=["greedy", "greedy:backend=vllm,label=greedy-vllm"], vllm_server_base_url=url,
        output_dir=str(tmp_path / "eval"), progress=False, metrics_dir=None, max_new_tokens=48,
    )  # fmt: skip
    metrics = evaluate_decoders(args)["test_seen"]
    assert metrics["greedy"]["accuracy_strict"] == metrics["greedy-vllm"]["accuracy_strict"]


def test_server_client_reports_the_served_model(served):
    _, model, url = served
    client = VLLMServer(url)
    assert client.model == str(model)
    _, tokenizer = load_model_and_tokenizer(str(model))
    assert SelfBacktrackingDecoder(client, tokenizer).backend == "vllm"


def test_study_round_harvests_through_a_server_it_starts(tmp_path):
    """vllm_serve: the study starts a vLLM server on the round's model, the harvest recipe searches through it, and
    the server is gone afterwards."""
    if not VLLM_PYTHON.exists():
        pytest.skip(f"no vLLM environment at {VLLM_PYTHON}: `make vllm-env` installs the CPU build of vLLM there")
    import subprocess

    import yaml
    from _study_utils import run_study, study_configs

    config = study_configs(tmp_path / "configs", tmp_path / "study", baseline=False)
    settings = yaml.safe_load(config.read_text())
    # Round 1 from the backtrack-SFT model (no self-correction stage): the server-harvest check of the old study.
    settings.update(rounds=1, round_eval_decoders=["greedy"], correction_pool_size=0)
    config.write_text(yaml.safe_dump(settings))
    proc = run_study(
        config, tmp_path, "--search_backend", "vllm", "--vllm_serve", "true", "--vllm_python", str(VLLM_PYTHON),
        "--vllm_server_args", "--dtype float32 --no-enable-chunked-prefill --max-model-len 128",
        "--vllm_server_env", "OMP_NUM_THREADS=1", "VLLM_CPU_KVCACHE_SPACE=1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = tmp_path / "study"
    stats = json.loads((study / "rounds" / "round_1" / "harvest.json").read_text())
    sources = load_dataset(str(study / "round_datasets"), "round_1", split="train")["source"]
    assert stats["kept"] == sources.count("search") > 0 and stats["mistake_rows"] == sources.count("mistake")
    assert "backend=vllm" in (study / "round_datasets" / "README.md").read_text()
    server_log = (study / "logs" / "round_1_vllm_server.log").read_text()
    assert "POST /v1/completions" in server_log
    running = subprocess.run(["pgrep", "-f", "vllm.entrypoints.openai.api_server --model " + str(study)],
                             capture_output=True, text=True)  # fmt: skip
    assert running.stdout.strip() == ""  # the server was stopped


def _offline(model, prompts, method, options, tmp_path):
    import subprocess

    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    command = [str(VLLM_PYTHON), str(Path(__file__).resolve().parents[1] / "_vllm_offline_worker.py"), str(model),
               str(tmp_path / "prompts.json"), method, json.dumps(options)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULTS "))
    return json.loads(line[len("RESULTS ") :])


def test_in_process_engine_gives_the_hf_greedy_answers(served, tmp_path):
    """backend="vllm" without a server: vllm.LLM in the process (run in the vLLM environment)."""
    from backtrack_trl.tasks.countdown.format import format_prompt

    _, model, _ = served
    prompts = [format_prompt(p) for p in SEEN[:20] + UNSEEN[:10]]
    offline = _offline(model, prompts, "greedy", {}, tmp_path)
    hf = GreedyDecoder.from_pretrained(str(model)).solve(prompts)
    assert [answer for answer, _, _ in offline] == [r.completion for r in hf]
    search = _offline(model, prompts, "self_backtracking", {"n": 4, "b": 1, "max_new_tokens": 48}, tmp_path)
    assert len(search) == len(prompts) and any(answer.endswith("Goal Reached!") for answer, _, _ in search)


def test_two_harvest_processes_share_one_server(served, tmp_path):
    """`accelerate launch` with 2 processes, both sending their shares of the pool to the one server."""
    import subprocess
    import sys

    _, model, url = served
    write_pool_file([TASK.problem_to_row(p) for p in SEEN], tmp_path / "pool.jsonl")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", "accelerate_configs/cpu_ddp.yaml",
        "recipes/harvest.py", "--model_name_or_path", str(model), "--pool_file", str(tmp_path / "pool.jsonl"),
        "--output_dir", str(tmp_path / "rounds"), "--search", "self_backtracking:n=4,b=1,max_new_tokens=48,backend=vllm",
        "--vllm_server_base_url", url, "--stats_file", str(tmp_path / "stats.json"), "--progress", "false",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["processes"] == 2 and stats["pool_problems"] == len(SEEN)
    assert stats["kept"] == len(load_dataset(str(tmp_path / "rounds"), "round_1", split="train")) > 0
