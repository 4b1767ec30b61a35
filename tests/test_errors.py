"""The one error exit of the recipes (and of the study), and the option a recipe reads before parsing."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from backtrack_trl.errors import (
    MissingDependencyError,
    ServerUnavailableError,
    UsageError,
    check_file,
    recipe_option,
    recipe_parser,
    run_recipe,
)


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


@dataclass
class _StageOptions:
    stage: Literal["data", "train", "all"] = field(default="all", metadata={"help": "Which stage."})
    method: Literal["dpo", "kto"] = field(default="dpo", metadata={"help": "Trainer."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Step size."})


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stage", "trian"], "--stage: invalid choice 'trian'; choose from 'data', 'train', 'all' (did you mean 'train'?)"),
        (["--method", "DPO"], "--method: invalid choice 'DPO'; choose from 'dpo', 'kto' (did you mean 'dpo'?)"),
        (["--method", "sft"], "--method: invalid choice 'sft'; choose from 'dpo', 'kto'"),
        (["--lerning_rate", "1"], "unknown option --lerning_rate: did you mean --learning_rate? List the options with --help."),
        (["--zzz"], "unknown option --zzz: List the options with --help."),
        (["--learning_rate", "fast"], "--learning_rate: invalid float value: 'fast'"),
        (["--stage"], "--stage: expected one argument"),
    ],
)  # fmt: skip
def test_a_bad_command_line_is_one_line_with_the_closest_choice(argv, message, capsys):
    with pytest.raises(UsageError) as error:
        recipe_parser((_StageOptions,)).parse_args_and_config(argv)
    assert str(error.value) == message
    assert capsys.readouterr().err == ""  # no usage dump
    with pytest.raises(SystemExit) as exit_info:  # argparse's exit code for a command line
        run_recipe(lambda: recipe_parser((_StageOptions,)).parse_args_and_config(argv))
    assert exit_info.value.code == 2 and capsys.readouterr().err == f"error: {message}\n"


def test_the_parser_without_config_and_a_good_command_line(tmp_path):
    (options,) = recipe_parser((_StageOptions,)).parse_args_and_config(["--stage", "train", "--method", "kto"])
    assert (options.stage, options.method) == ("train", "kto")
    parser = recipe_parser((_StageOptions,), with_config=False)  # HfArgumentParser: --config is an ordinary option
    with pytest.raises(UsageError, match="did you mean 'train'"):
        parser.parse_args_into_dataclasses(["--stage", "trian"])
    *_, rest = parser.parse_args_into_dataclasses(["--other", "1"], return_remaining_strings=True)
    assert rest == ["--other", "1"]  # asked for: the leftovers are returned, not refused


def test_the_config_file_is_checked_before_parsing(tmp_path):
    def parse(config):
        return recipe_parser((_StageOptions,)).parse_args_and_config(["--config", str(config)])

    with pytest.raises(FileNotFoundError, match=r"--config '.*' is a folder, not a YAML file"):
        parse(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"--config '.*missing.yaml' does not exist"):
        parse(tmp_path / "missing.yaml")
    config = tmp_path / "c.yaml"
    config.write_text("stage: data\nlerning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"c.yaml': unknown key 'lerning_rate': did you mean 'learning_rate'\?"):
        parse(config)
    config.write_text("stage: trian\n")  # argparse never checks a YAML value against the choices
    with pytest.raises(ValueError, match=r"c.yaml': stage: invalid choice 'trian'.*\(did you mean 'train'\?\)"):
        parse(config)
    config.write_text("stage: data\nmethod: kto\n")
    (options,) = parse(config)
    assert (options.stage, options.method) == ("data", "kto")


def test_user_errors_met_at_the_point_of_failure_are_one_line(capsys):
    for error in (ServerUnavailableError("start it with `make vllm-serve`"), MissingDependencyError("make vllm-env")):
        with pytest.raises(SystemExit) as exit_info:
            run_recipe(_raise(error))
        assert exit_info.value.code == 1 and capsys.readouterr().err == f"error: {error}\n"
    assert issubclass(ServerUnavailableError, ConnectionError) and issubclass(MissingDependencyError, ImportError)
    for bug in (ConnectionError("a bug"), ImportError("a bug"), IsADirectoryError("a bug")):  # tracebacks stay
        with pytest.raises(type(bug)):
            run_recipe(_raise(bug))


def test_check_file_names_the_option_for_a_folder_or_a_missing_file(tmp_path, capsys):
    (tmp_path / "pool.jsonl").write_text("{}\n")
    assert check_file(tmp_path / "pool.jsonl", "--pool_file") == tmp_path / "pool.jsonl"
    with pytest.raises(IsADirectoryError, match=r"^--pool_file '.*' is a folder, not a file: give a JSON-lines file$"):
        check_file(tmp_path, "--pool_file", "give a JSON-lines file")
    with pytest.raises(FileNotFoundError, match=r"^--pool_file '.*nope' does not exist\.$"):
        check_file(tmp_path / "nope", "--pool_file")
    with pytest.raises(SystemExit) as exit_info:  # a user error, not a traceback
        run_recipe(lambda: check_file(tmp_path, "--generations"))
    assert (
        exit_info.value.code == 1
        and capsys.readouterr().err == f"error: --generations {str(tmp_path)!r} is a folder, not a file.\n"
    )
