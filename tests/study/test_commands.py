"""The sub-recipe commands of the study: options on the command line, the launcher, the scripts a study needs, and
a failing command's message."""

import sys
from pathlib import Path

import pytest

from backtrack_trl.study import commands
from backtrack_trl.study.commands import (
    RecipeLauncher,
    StageFailedError,
    cli_args,
    needed_scripts,
    run_logged,
)
from backtrack_trl.study.config import SelfImproveArguments


def test_cli_args_skip_none_and_spread_lists():
    overrides = {"output_dir": Path("out"), "seed": 3, "dataset_config": None, "decoders": ["greedy", "beam:n=4"]}
    assert cli_args(overrides) == ["--output_dir", "out", "--seed", "3", "--decoders", "greedy", "beam:n=4"]


def test_launcher_uses_the_eval_accelerate_config_for_decoding_recipes_only(tmp_path):
    launcher = RecipeLauncher(tmp_path, "cpu.yaml", eval_accelerate_config="ddp.yaml", python="py")
    sft = launcher.command("sft.py", "c.yaml", {"seed": 1}, launch=True)
    assert sft == ["py", "-m", "accelerate.commands.launch", "--quiet", "--config_file", "cpu.yaml",
                   str(tmp_path / "sft.py"), "--config", "c.yaml", "--seed", "1"]  # fmt: skip
    for script in ("evaluate_decoders.py", "harvest.py"):
        cmd = launcher.command(script, None, {}, launch=True)
        assert cmd[cmd.index("--config_file") + 1] == "ddp.yaml" and "--config" not in cmd
    assert launcher.command("build_dataset.py", "d.yaml", {}) == ["py", str(tmp_path / "build_dataset.py"),
                                                                  "--config", "d.yaml"]  # fmt: skip


def test_launcher_runs_with_the_study_lock_and_the_stage_log(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(commands, "run_logged", lambda cmd, log, fds=(): calls.append((cmd, log, fds)))
    args = SelfImproveArguments(num_processes=2)
    RecipeLauncher.from_args(args, tmp_path, python="py", lock_fds=(7,)).run("sft.py", None, {}, tmp_path / "s.log")
    RecipeLauncher.from_args(args, tmp_path, python="py").run("sft.py", None, {}, tmp_path / "t.log", launch=True)
    (first, log, fds), (second, _, _) = calls
    assert log == tmp_path / "s.log" and fds == (7,) and "--num_processes" not in first  # not launched
    assert second[second.index("--num_processes") + 1] == "2"


def test_needed_scripts_follow_the_options():
    assert needed_scripts(SelfImproveArguments()) == list(commands.RECIPE_SCRIPTS)
    given = needed_scripts(SelfImproveArguments(backtrack_model="some/model", dpo_config="dpo.yaml"))
    assert "init_model.py" not in given and {"build_preference_dataset.py", "preference.py"} <= set(given)
    assert needed_scripts(SelfImproveArguments(reward_model_config="orm.yaml"))[-1] == "reward_model.py"


def test_a_failing_command_names_its_last_line_and_log(tmp_path):
    script = "import sys; print('working'); print('ValueError: bad value'); sys.exit(3)"
    with pytest.raises(StageFailedError, match=r"exit code 3: .*\n  last line: ValueError: bad value\n  full log: "):
        run_logged([sys.executable, "-c", script], tmp_path / "logs" / "stage.log")
    assert (tmp_path / "logs" / "stage.log").read_text() == "working\nValueError: bad value\n"
