"""The one error exit of the recipes (and of the study), and the option a recipe reads before parsing."""

import pytest

from backtrack_trl.errors import recipe_option, run_recipe


class StudyError(RuntimeError):
    pass


def _raise(error):
    def main():
        raise error

    return main


def test_a_user_error_is_one_line_and_exit_code_1(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(_raise(ValueError("--x must be > 0")))
    assert exit_info.value.code == 1 and capsys.readouterr().err == "error: --x must be > 0\n"
    with pytest.raises(RuntimeError):  # not a user error: the traceback stays
        run_recipe(_raise(StudyError("bug")))


def test_extra_user_errors_a_lead_and_an_interrupted_note(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(_raise(StudyError("stage failed")), (StudyError, ValueError), lead="\n")
    assert exit_info.value.code == 1 and capsys.readouterr().err == "\nerror: stage failed\n"
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(_raise(KeyboardInterrupt()), lead="\n", interrupted="interrupted: rerun to resume.")
    assert exit_info.value.code == 130 and capsys.readouterr().err == "\ninterrupted: rerun to resume.\n"
    assert run_recipe(lambda: 5) == 5


def test_traceback_variable_shows_the_user_error(monkeypatch):
    monkeypatch.setenv("BACKTRACK_TRL_TRACEBACK", "1")
    with pytest.raises(ValueError, match="shown"):
        run_recipe(_raise(ValueError("shown")))


def test_recipe_option_from_the_command_line_or_the_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("task: sudoku\nmethod: kto\n")
    assert recipe_option(["--task", "countdown", "--task=sudoku"], "task") == "sudoku"  # the last wins
    assert recipe_option(["--config", str(config)], "method") == "kto"
    assert recipe_option(["--config", str(config), "--method", "dpo"], "method") == "dpo"
    assert recipe_option(["--config", str(config)], "seed") is None
    with pytest.raises(FileNotFoundError, match=r"--config '.*missing.yaml' does not exist"):
        recipe_option(["--config", str(tmp_path / "missing.yaml")], "task")


def test_run_options_recipe_parses_the_options_and_reports_a_user_error_in_one_line(monkeypatch, capsys):
    from dataclasses import dataclass, field

    from backtrack_trl.errors import run_options_recipe

    @dataclass
    class Options:
        size: int = field(default=1, metadata={"help": "A size."})

    seen = []
    monkeypatch.setattr("sys.argv", ["recipe.py", "--size", "3"])
    run_options_recipe(Options, lambda options: seen.append(options.size))
    assert seen == [3]

    def refuse(options):
        raise ValueError(f"--size {options.size}: too small; use 4 or more.")

    with pytest.raises(SystemExit) as exit_info:
        run_options_recipe(Options, refuse)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: --size 3: too small; use 4 or more.\n"
