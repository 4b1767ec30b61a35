"""GRPO in the study: the Table 1 GRPO stage's command, GRPO rounds (pool prompts, chained models, no harvest and no
control arm), the round_trainer option and its fingerprint, resuming a GRPO stage."""

import json
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict, load_dataset

from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.study import commands
from backtrack_trl.study.checks import validate_sub_configs
from backtrack_trl.study.commands import needed_scripts
from backtrack_trl.study.config import RESUMABLE_OPTIONS, SelfImproveArguments, study_config
from backtrack_trl.study.layout import StudyLayout
from backtrack_trl.study.runner import run_stage, study_stages
from backtrack_trl.study.stages.base import StudyContext
from backtrack_trl.study.stages.grpo import grpo_round_stages, grpo_stages, write_round_prompts
from backtrack_trl.study.stages.rounds import pool_problems
from backtrack_trl.study.state import StudyState, fingerprint


ROOT = Path(__file__).resolve().parents[2]
GRPO = "recipes/countdown-tiny/grpo/config_default.yaml"


def _context(tmp_path, **options) -> StudyContext:
    return StudyContext.from_args(SelfImproveArguments(output_dir=str(tmp_path), **options), tmp_path, "python")


def _option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(f"--{name}") + 1]


def test_the_grpo_stage_launches_recipes_grpo_from_the_round_0_model_on_the_backtrack_data(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(commands, "run_logged", lambda cmd, log, fds=(): calls.append((cmd, log)))
    train, evaluate = grpo_stages(_context(tmp_path, grpo_config=GRPO, seed=7))
    assert (train.name, train.outputs) == ("grpo", (tmp_path / "models/grpo",))
    assert (evaluate.name, evaluate.outputs) == ("eval_grpo", (tmp_path / "eval/grpo",))
    train.run()
    evaluate.run()
    (cmd, log), (eval_cmd, eval_log) = calls
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and cmd[cmd.index("--config") - 1] == str(
        tmp_path / "grpo.py"
    )
    assert _option(cmd, "config") == GRPO and log == tmp_path / "logs/grpo.log"
    assert _option(cmd, "model_name_or_path") == str(tmp_path / "models/self-correct")  # the round-0 model
    assert _option(cmd, "dataset_name") == str(tmp_path / "data/backtrack")
    assert _option(cmd, "output_dir") == str(tmp_path / "models/grpo")
    assert (_option(cmd, "seed"), _option(cmd, "task")) == ("7", "countdown")
    assert _option(eval_cmd, "model_name_or_path") == str(tmp_path / "models/grpo")
    assert eval_cmd[eval_cmd.index("--decoders") + 1 :] == ["greedy", "self_backtracking:n=32,b=1"]
    assert eval_log == tmp_path / "logs/eval_grpo.log"
    assert grpo_stages(_context(tmp_path)) == []  # no grpo_config: no stage


def test_the_grpo_stage_starts_from_a_given_backtrack_model_without_self_correction(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(commands, "run_logged", lambda cmd, log, fds=(): calls.append(cmd))
    grpo_stages(_context(tmp_path, grpo_config=GRPO, correction_pool_size=0, backtrack_model="org/m"))[0].run()
    assert _option(calls[0], "model_name_or_path") == "org/m"


def test_the_study_order_with_grpo_rows_and_grpo_rounds(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the default eval config is read for the optimal model's decoders
    options = {"backtrack_model": "m", "correction_pool_size": 0, "optimal_data_config": None, "rounds": 2}
    names = [stage.name for stage in study_stages(_context(tmp_path, grpo_config=GRPO, **options))]
    assert names == ["data_backtrack", "eval_backtrack", "grpo", "eval_grpo", "round_1_search", "round_1_sft",
                     "round_1_eval", "control_1_data", "control_1_sft", "control_1_eval", "round_2_search",
                     "round_2_sft", "round_2_eval"]  # fmt: skip
    grpo_rounds = _context(tmp_path, round_trainer="grpo", round_grpo_config=GRPO, **options)
    names = [stage.name for stage in study_stages(grpo_rounds)]  # no harvest, no control arm
    assert names == ["data_backtrack", "eval_backtrack", "round_1_pool", "round_1_grpo", "round_1_eval",
                     "round_2_pool", "round_2_grpo", "round_2_eval"]  # fmt: skip


def test_grpo_rounds_chain_the_models_on_their_pool_prompts(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(commands, "run_logged", lambda cmd, log, fds=(): calls.append(cmd))
    ctx = _context(tmp_path, grpo_config=GRPO, round_trainer="grpo", round_grpo_config="round.yaml")
    pool, train, evaluate = grpo_round_stages(ctx, 2)
    rdir = tmp_path / "rounds/round_2"
    assert pool.outputs == (rdir / "prompts", rdir / "pool.json") and train.outputs == (rdir / "model",)
    train.run()
    (cmd,) = calls
    assert _option(cmd, "config") == "round.yaml"  # round_grpo_config, not grpo_config
    assert _option(cmd, "model_name_or_path") == str(tmp_path / "rounds/round_1/model")
    assert (_option(cmd, "dataset_name"), _option(cmd, "output_dir")) == (str(rdir / "prompts"), str(rdir / "model"))
    assert (evaluate.name, evaluate.outputs) == ("round_2_eval", (rdir / "eval",))


def test_a_grpo_round_s_prompts_are_its_pool_of_train_questions(tmp_path):
    train = [{"prompt": f"###Question: numbers [{n}, 1]->target {n + 1}\n###Response:\n", "completion": c,
              "numbers": [n, 1], "target": n + 1} for n in range(1, 11) for c in ("a", "b")]  # fmt: skip
    test = [{"prompt": "###Question: numbers [50, 1]->target 51\n###Response:\n", "completion": "x", "numbers": [50, 1],
             "target": 51}]  # fmt: skip
    data = DatasetDict({"train": Dataset.from_list(train), "test_seen": Dataset.from_list(test)})
    write_hub_dataset(data, tmp_path / "data" / "backtrack")
    ctx = _context(tmp_path, pool_size=4, seed=3)
    write_round_prompts(ctx, 2)
    prompts = load_dataset(str(tmp_path / "rounds/round_2/prompts"), split="train")
    pool = pool_problems(StudyLayout(tmp_path), ctx.task, 3, 4, 2)  # the slice round 2's harvest would search
    assert sorted(zip(map(tuple, prompts["numbers"]), prompts["target"])) == sorted(
        (tuple(p["numbers"]), p["target"]) for p in pool
    )
    assert len(set(prompts["prompt"])) == 4 and "completion" not in prompts.column_names
    assert json.loads((tmp_path / "rounds/round_2/pool.json").read_text()) == {"pool_problems": 4, "trainer": "grpo"}


def test_a_finished_grpo_stage_is_skipped_and_an_interrupted_one_starts_again(tmp_path, monkeypatch):
    runs = []

    def fake_run(cmd, log, fds=()):
        out = Path(_option(cmd, "output_dir"))
        assert not out.exists()  # an interrupted run's leftovers are gone
        out.mkdir(parents=True)
        runs.append(cmd)

    monkeypatch.setattr(commands, "run_logged", fake_run)
    state = StudyState.open(tmp_path / "study", {"seed": 0})
    train, _ = grpo_stages(_context(tmp_path / "study", grpo_config=GRPO))
    (tmp_path / "study/models/grpo").mkdir(parents=True)  # a killed run's half-written model
    (tmp_path / "study/models/grpo/checkpoint-1").mkdir()
    run_stage(train, state, 0.0)
    assert len(runs) == 1 and state.is_done("grpo") and state.stages["grpo"]["seconds"] >= 0
    run_stage(train, state, 0.0)
    assert len(runs) == 1  # finished: skipped
    (tmp_path / "study/models/grpo").rmdir()  # its model deleted by hand: trained again
    run_stage(train, state, 0.0)
    assert len(runs) == 2


@pytest.mark.parametrize(
    "options, message",
    [
        ({"round_trainer": "ppo"}, r"round_trainer='ppo': choose 'sft' .* or 'grpo'"),
        ({"round_trainer": "grpo"}, "round_trainer: grpo needs a recipes/grpo.py config: set round_grpo_config"),
        ({"round_trainer": "grpo", "grpo_config": "None"}, "round_trainer: grpo needs"),
    ],
)
def test_a_bad_round_trainer_is_one_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        SelfImproveArguments(**options)


def test_grpo_rounds_take_grpo_config_unless_given_their_own():
    assert SelfImproveArguments(round_trainer="grpo", grpo_config="g.yaml").round_grpo_config == "g.yaml"
    assert SelfImproveArguments(round_trainer="grpo", grpo_config="g.yaml", round_grpo_config="r.yaml").round_grpo_config == "r.yaml"  # fmt: skip
    assert SelfImproveArguments(grpo_config="g.yaml").round_grpo_config is None  # SFT rounds: unused
    assert "grpo.py" in needed_scripts(SelfImproveArguments(grpo_config="g.yaml"))
    assert "grpo.py" not in needed_scripts(SelfImproveArguments())


def test_adding_the_grpo_row_keeps_a_study_resumable_but_grpo_rounds_do_not(monkeypatch):
    monkeypatch.chdir(ROOT)

    def fp(**options):
        return fingerprint(study_config(SelfImproveArguments(**options)), RESUMABLE_OPTIONS)

    plain = fp()
    assert fp(grpo_config=GRPO) == plain  # only adds the stages grpo and eval_grpo
    assert fp(round_trainer="grpo", grpo_config=GRPO) != plain  # the rounds themselves change
    assert "round_trainer" not in study_config(SelfImproveArguments())  # folders made before the option resume


def test_a_bad_grpo_config_fails_before_any_stage_naming_the_option(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = yaml.safe_load((ROOT / GRPO).read_text())
    bad = tmp_path / "grpo.yaml"
    bad.write_text(yaml.safe_dump({**config, "temperature": 0}))
    with pytest.raises(ValueError, match=rf"--grpo_config {bad}: --temperature must be > 0"):
        validate_sub_configs(SelfImproveArguments(grpo_config=str(bad)), StudyLayout(tmp_path))
    with pytest.raises(ValueError, match=rf"--round_grpo_config {bad}: --temperature must be > 0"):
        args = SelfImproveArguments(grpo_config=GRPO, round_trainer="grpo", round_grpo_config=str(bad))
        validate_sub_configs(args, StudyLayout(tmp_path))
