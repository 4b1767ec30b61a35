"""The study's stages, built without running them: their order, names, outputs and the sub-recipe options, the
round pools, and the harvest stage under a per-round vLLM server."""

import contextlib
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.decoding import vllm_launch
from backtrack_trl.study import commands
from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.study.harvest import read_pool_file
from backtrack_trl.study.layout import StudyLayout
from backtrack_trl.study.runner import study_stages
from backtrack_trl.study.stages import rounds
from backtrack_trl.study.stages.base import StudyContext
from backtrack_trl.study.stages.correction import correction_overrides, correction_stages
from backtrack_trl.study.stages.rounds import harvest_overrides, harvest_round, pool_problems
from backtrack_trl.study.stages.table1 import baseline_stages, table1_eval_stages
from backtrack_trl.tasks import get_task


ROOT = Path(__file__).resolve().parents[2]
TASK = get_task("countdown")


def _context(tmp_path, **options) -> StudyContext:
    return StudyContext.from_args(SelfImproveArguments(output_dir=str(tmp_path), **options), tmp_path, "python")


def test_the_stages_of_the_default_study_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the default eval config is read for the optimal model's decoders
    names = [stage.name for stage in study_stages(_context(tmp_path, rounds=2))]
    assert names == [
        "data_backtrack", "data_optimal", "init_model", "sft_optimal", "sft_backtrack", "self_correct_search",
        "self_correct_sft", "eval_backtrack-synthetic", "eval_optimal", "eval_backtrack", "round_1_search",
        "round_1_sft", "round_1_eval", "control_1_data", "control_1_sft", "control_1_eval", "round_2_search",
        "round_2_sft", "round_2_eval",
    ]  # fmt: skip
    given = [s.name for s in study_stages(_context(tmp_path, rounds=1, backtrack_model="m", control=False,
                                                   correction_pool_size=0))]  # fmt: skip
    assert given == ["data_backtrack", "data_optimal", "sft_optimal", "eval_optimal", "eval_backtrack",
                     "round_1_search", "round_1_sft", "round_1_eval"]  # fmt: skip


def test_self_correction_starts_from_the_backtrack_model_and_feeds_round_1(tmp_path):
    context = _context(tmp_path, backtrack_model="org/m", synthetic_eval_decoders=[])
    search, sft = correction_stages(context)
    overrides = correction_overrides(context)
    assert overrides["model_name_or_path"] == "org/m" and overrides["keep"] == "none"
    assert overrides["replay_dataset"] == tmp_path / "data/backtrack" and overrides["mistakes_per_problem"] == 8
    assert search.dataset_config == (tmp_path / "round_datasets", "self_correct")
    assert sft.outputs == (tmp_path / "models/self-correct",)
    assert harvest_overrides(context, 1)["model_name_or_path"] == tmp_path / "models/self-correct"
    plain = _context(tmp_path, backtrack_model="org/m", correction_pool_size=0, round_mistakes=False)
    assert correction_stages(plain) == [] and harvest_overrides(plain, 1)["model_name_or_path"] == "org/m"
    assert "mistakes_per_problem" not in harvest_overrides(plain, 1)


def test_the_optimal_model_is_evaluated_without_backtracking_decoders(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    optimal, backtrack = table1_eval_stages(_context(tmp_path))
    assert optimal.outputs == (tmp_path / "eval" / "optimal",) and backtrack.outputs == (tmp_path / "eval/backtrack",)
    calls = []
    monkeypatch.setattr(commands, "run_logged", lambda cmd, log, fds=(): calls.append((cmd, log)))
    optimal.run()
    backtrack.run()
    (first, log), (second, _) = calls
    decoders = first[first.index("--decoders") + 1 :]
    assert decoders and not [d for d in decoders if d.startswith(("self_backtracking", "released"))]
    assert log == tmp_path / "logs" / "eval_optimal.log" and "--decoders" not in second  # the eval config's own


def test_the_baselines_need_the_optimal_model(tmp_path):
    with pytest.raises(ValueError, match="start from the optimal-SFT model"):
        baseline_stages(_context(tmp_path, dpo_config="dpo.yaml", optimal_sft_config=None))
    names = [s.name for s in baseline_stages(_context(tmp_path, kto_config="kto.yaml", reward_model_config="r.yaml"))]
    assert names == ["data_preference", "kto", "eval_kto", "reward_model", "eval_orm"]


def test_round_stages_chain_the_models_and_redo_a_lost_dataset_config(tmp_path):
    search, sft, evaluation = rounds.round_stages(_context(tmp_path), 2)
    assert search.outputs == (tmp_path / "rounds/round_2/harvest.json",)
    assert search.dataset_config == (tmp_path / "round_datasets", "round_2")
    assert (sft.name, sft.outputs, evaluation.name) == (
        "round_2_sft",
        (tmp_path / "rounds/round_2/model",),
        "round_2_eval",
    )
    overrides = harvest_overrides(_context(tmp_path, seed=5, search_n=8, search_b=2), 2)
    assert overrides["model_name_or_path"] == tmp_path / "rounds/round_1/model" and overrides["seed"] == 2005
    assert overrides["search"] == "self_backtracking:n=8,b=2,temperature=0.7,batch_size=64,max_new_tokens=64"


def test_round_pools_are_fresh_slices_of_the_train_questions(tmp_path):
    train = [{"prompt": "p", "numbers": [n, 1], "target": n + 1} for n in range(1, 11)]
    write_hub_dataset(DatasetDict({"train": Dataset.from_list(train + train[:3])}), tmp_path / "data" / "backtrack")
    layout = StudyLayout(tmp_path)
    first, second = (pool_problems(layout, TASK, 0, 4, k) for k in (1, 2))
    assert len(first) == len(second) == 4 and not {str(r) for r in first} & {str(r) for r in second}
    assert pool_problems(layout, TASK, 0, 4, 1) == first  # seeded
    assert len(pool_problems(layout, TASK, 0, 50, 1)) == 10  # distinct questions only, never more


def test_study_harvest_launches_the_recipe_with_a_server_per_round(tmp_path, monkeypatch):
    """The harvest stage: pool file written, `accelerate launch recipes/harvest.py` with the eval accelerate config,
    the search spec and, with vllm_serve, a server started on round k-1's model (its env and args) for the launch."""
    servers, launched = [], []

    @contextlib.contextmanager
    def fake_server(model, python, extra_args, env, log_file):
        servers.append({"model": str(model), "python": python, "args": extra_args, "env": env, "up": True})
        yield "http://127.0.0.1:5555"
        servers[-1]["up"] = False

    def fake_run(cmd, log, fds=()):
        assert servers and servers[-1]["up"]  # the server is up while the harvest runs
        launched.append(cmd)

    pool = [{"numbers": [3, 5, 2], "target": 16}, {"numbers": [4, 6, 1], "target": 25}]
    monkeypatch.setattr(vllm_launch, "launch_vllm_server", fake_server)
    monkeypatch.setattr(commands, "run_logged", fake_run)
    monkeypatch.setattr(rounds, "pool_problems", lambda *args: pool)
    ctx = _context(
        tmp_path, search_backend="vllm", vllm_serve=True, vllm_python="/venv/bin/python",
        vllm_server_args="--data-parallel-size 4 --gpu-memory-utilization 0.9",
        vllm_server_env=["CUDA_VISIBLE_DEVICES=4,5,6,7"], eval_accelerate_config="accelerate_configs/ddp.yaml",
        search_n=16, search_b=1,
    )  # fmt: skip
    harvest_round(ctx, 2)
    round_1 = str(tmp_path / "rounds" / "round_1" / "model")
    assert servers == [{"model": round_1, "python": "/venv/bin/python", "up": False,
                        "args": ["--data-parallel-size", "4", "--gpu-memory-utilization", "0.9"],
                        "env": {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}}]  # fmt: skip
    (cmd,) = launched
    assert cmd[cmd.index("--config_file") + 1] == "accelerate_configs/ddp.yaml"
    assert cmd[cmd.index("--vllm_server_base_url") + 1] == "http://127.0.0.1:5555"
    search = cmd[cmd.index("--search") + 1]
    assert search.startswith("self_backtracking:") and "n=16" in search and "backend=vllm" in search
    assert cmd[cmd.index("--model_name_or_path") + 1] == round_1
    assert read_pool_file(cmd[cmd.index("--pool_file") + 1], "countdown") == pool


def test_self_correction_uses_a_vllm_server_only_when_its_own_search_asks(tmp_path, monkeypatch):
    from backtrack_trl.study.stages import correction

    calls = []
    monkeypatch.setattr(correction, "pool_problems", lambda *args: [{"numbers": [3, 5, 2], "target": 16}])
    monkeypatch.setattr(correction, "launch_harvest", lambda ctx, name, pool, o, serve: calls.append((o, serve)))
    served = {"search_backend": "vllm", "vllm_server_base_url": "http://round-model:8000"}
    correction.harvest_mistakes(_context(tmp_path, **served))
    overrides, serve = calls[-1]
    assert overrides["vllm_server_base_url"] is None and serve is False  # the round's server serves another model
    spec = "self_backtracking:n=8,b=0,backend=vllm"
    correction.harvest_mistakes(_context(tmp_path, **served, correction_search=spec))
    overrides, serve = calls[-1]
    assert overrides["vllm_server_base_url"] == "http://round-model:8000" and serve is True
