"""The study's options: bad values refused at parse time, and the fingerprint config that keeps old study folders
resumable."""

from pathlib import Path

import pytest
import yaml

from backtrack_trl.study.config import (
    ADDED_OPTIONS,
    RESUMABLE_OPTIONS,
    SUB_CONFIGS,
    SelfImproveArguments,
    study_config,
    thread_setting,
)
from backtrack_trl.study.state import fingerprint


ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "countdown-tiny"


@pytest.fixture
def repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the default options name the sub-recipe configs relative to the repository


def test_study_options_of_the_vllm_harvest_are_checked():
    with pytest.raises(ValueError, match="set search_backend: vllm too"):
        SelfImproveArguments(vllm_serve=True)
    with pytest.raises(ValueError, match="not both"):
        SelfImproveArguments(search_backend="vllm", vllm_serve=True, vllm_server_base_url="http://x:8000")
    with pytest.raises(ValueError, match="'CUDA_VISIBLE_DEVICES' is not KEY=VALUE"):
        SelfImproveArguments(search_backend="vllm", vllm_serve=True, vllm_server_env=["CUDA_VISIBLE_DEVICES"])
    with pytest.raises(ValueError, match="search_backend='tgi'"):
        SelfImproveArguments(search_backend="tgi")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"rounds": -1}, "rounds=-1: must be >= 0"),
        ({"pool_size": 0}, "pool_size=0: must be >= 1"),
        ({"search_b": -1}, "search_b=-1 >= 0"),
        ({"keep": "first"}, "keep='first': choose 'best_correct' or 'chosen'"),
        ({"push_to_hub": True}, "--push_to_hub needs --hub_dataset_id"),
        ({"num_processes": 0}, "num_processes=0: must be >= 1"),
    ],
)
def test_bad_study_options_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        SelfImproveArguments(**options)


def test_the_string_none_disables_an_optional_config():
    args = SelfImproveArguments(optimal_data_config="None", init_model_config="null", eval_config="None")
    assert args.optimal_data_config is None and args.init_model_config is None
    assert args.eval_config == "None"  # a required option is left as given


def test_study_config_holds_each_sub_config_content(repo_root):
    config = study_config(SelfImproveArguments())
    content = yaml.safe_load((TINY / "sft" / "config_round.yaml").read_text())
    assert config["round_sft_config_content"] == content
    # every configured sub-config is fingerprinted by content; unset ones (dpo/kto/reward model) are not
    assert {key for key in config if key.endswith("_content")} == {
        f"{key}_content" for key in SUB_CONFIGS if getattr(SelfImproveArguments(), key)
    }


def test_options_added_later_stay_out_of_the_fingerprint_at_their_default(repo_root):
    config = study_config(SelfImproveArguments())
    assert not set(ADDED_OPTIONS) & set(config) and "task" not in config  # as in folders written before them
    changed = study_config(SelfImproveArguments(search_max_new_tokens=32, task="sudoku"))
    assert changed["search_max_new_tokens"] == 32 and changed["task"] == "sudoku"


def test_more_rounds_or_another_launcher_keep_the_fingerprint(repo_root):
    base = study_config(SelfImproveArguments())
    more = study_config(SelfImproveArguments(rounds=7, num_processes=4, accelerate_config="x.yaml"))
    assert fingerprint(base, RESUMABLE_OPTIONS) == fingerprint(more, RESUMABLE_OPTIONS)
    other = study_config(SelfImproveArguments(pool_size=7))
    assert fingerprint(base, RESUMABLE_OPTIONS) != fingerprint(other, RESUMABLE_OPTIONS)


def test_a_missing_sub_config_names_its_option(repo_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--round_sft_config '.*nowhere.yaml' does not exist"):
        study_config(SelfImproveArguments(round_sft_config=str(tmp_path / "nowhere.yaml")))


def test_thread_setting_reports_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_setting() == "OMP_NUM_THREADS=3"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert thread_setting().endswith("(torch default, OMP_NUM_THREADS unset)")
