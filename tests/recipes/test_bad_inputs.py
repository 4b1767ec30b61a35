"""Bad input gets one clear error naming the option and the fix, before any work starts; recipes print it as one
line (``error: ...``, exit code 1) without a traceback."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict

from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.decoding.api import check_decoder_options, load_model_and_tokenizer
from backtrack_trl.evaluation import EvaluationArguments, load_eval_dataset
from backtrack_trl.study.commands import find_recipes_dir
from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.study.runner import Study
from backtrack_trl.training.model_init import InitModelArguments
from backtrack_trl.training.sft_config import parse_args


ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "countdown-tiny"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_hidden_layers": -1}, "--num_hidden_layers must be a positive integer, got -1"),
        ({"max_position_embeddings": 0}, "--max_position_embeddings must be a positive integer, got 0"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "hidden_size=30 must be divisible by num_attention_heads=4"),
        ({"num_key_value_heads": 3}, "num_attention_heads=4 must be divisible by num_key_value_heads=3"),
    ],
)
def test_init_model_sizes_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        InitModelArguments(**options)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_problems": -5}, "--max_problems must be a positive number of problems"),
        ({"max_problems": 0}, "--max_problems must be a positive number"),
        ({"decoders": ["self_backtracking:bb=1"]}, "unknown option.*'bb' for 'self_backtracking'; its options are b,"),
        ({"decoders": ["self_backtracking:bb=1"]}, r"^--decoders: Decoder spec .*\(did you mean 'b'\?\)\.$"),
        (
            {"decoders": ["self_backtraking:n=2"]},
            r"^--decoders: .*unknown method 'self_backtraking'.*mean 'self_backtracking'",
        ),
        ({"decoders": ["greedy", "beam:n"]}, r"^--decoders: Decoder spec 'beam:n': 'n' is not key=value \(e\.g\. "),
        ({"dtype": "fp8"}, r"^--dtype 'fp8': choose auto, bfloat16, float16 or float32\.$"),
        ({"task": "sudok"}, r"Unknown task 'sudok'; .*\(did you mean 'sudoku'\?\)\. Set --task"),
        ({"decoders": ["self_backtracking:temperature=-1"]}, "temperature must be >= 0, got -1"),
        ({"decoders": ["greedy:n=4"]}, "unknown option.*'n' for 'greedy'"),
        ({"decoders": ["beam:n=0"]}, r"n \(beams\) must be an integer in \[1, 4096\], got 0"),
        ({"decoders": ["dfs"]}, "unknown method 'dfs'"),
    ],
)
def test_evaluation_options_are_checked_before_any_model_loads(options, message):
    with pytest.raises(ValueError, match=message):
        EvaluationArguments(**options)


def test_decoder_options_that_are_fine_pass():
    check_decoder_options("self_backtracking", {"n": 4, "b": 1, "tabu": True, "selection": "combined"})
    check_decoder_options("released", {"n": 2, "b": 1})


def test_missing_model_folder_says_no_such_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"'.*nowhere/model': no such folder"):
        load_model_and_tokenizer(str(tmp_path / "nowhere" / "model"))
    message = r"^--model_name_or_path '.*nowhere': no such folder, .*: give a model folder written by recipes/sft.py"
    with pytest.raises(FileNotFoundError, match=message):
        load_model_and_tokenizer(str(tmp_path / "nowhere"), option="--model_name_or_path")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"^--model '.*empty' holds no loadable model \(.*\): give a model folder"):
        load_model_and_tokenizer(str(tmp_path / "empty"), option="--model")


def test_missing_or_empty_dataset_split(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="no such folder.*recipes/build_dataset.py"):
        load_eval_dataset(str(tmp_path / "missing"), None, ["test_seen"])
    folder = tmp_path / "data"
    rows = {"prompt": ["p"], "numbers": [[1, 2]], "target": [3]}
    empty = Dataset.from_dict({k: v[:0] for k, v in rows.items()}, features=Dataset.from_dict(rows).features)
    write_hub_dataset(DatasetDict({"test_seen": Dataset.from_dict(rows), "test_new": empty}), folder)
    with pytest.raises(ValueError, match="has no rows"):
        load_eval_dataset(str(folder), None, ["test_seen", "test_new"])
    message = r"^--splits: '.*data' has no split 'test_sen'; it has test_new, test_seen \(did you mean 'test_seen'\?\)"
    write_hub_dataset(DatasetDict({"test_seen": Dataset.from_dict(rows), "test_new": Dataset.from_dict(rows)}), folder,
                      overwrite=True)  # fmt: skip
    with pytest.raises(ValueError, match=message):
        load_eval_dataset(str(folder), None, ["test_sen"])


def test_sft_values_transformers_accepts_silently(tmp_path):
    base = ["--config", str(TINY / "sft" / "config_backtrack.yaml"), "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="--learning_rate must be > 0, got -0.1"):
        parse_args(base + ["--learning_rate", "-0.1"])
    with pytest.raises(ValueError, match="--per_device_train_batch_size must be >= 1"):
        parse_args(base + ["--per_device_train_batch_size", "0"])


def _study_args(tmp_path, **changes):
    config = yaml.safe_load((TINY / "self_improve" / "config_default.yaml").read_text())
    config.update({"output_dir": str(tmp_path / "study"), **changes})
    return SelfImproveArguments(**config)


def test_study_checks_every_sub_config_before_the_first_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    eval_config = yaml.safe_load((TINY / "eval" / "config_default.yaml").read_text())
    eval_config["decoders"] = ["greedy", "self_backtracking:n=8,temperature=-0.5"]
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(eval_config))
    sft = (TINY / "sft" / "config_round.yaml").read_text() + "\nlearning_rate: -1.0\n"
    (tmp_path / "round.yaml").write_text(sft)
    init = yaml.safe_load((TINY / "init_model.yaml").read_text())
    (tmp_path / "init.yaml").write_text(yaml.safe_dump({**init, "num_hidden_layers": -1}))
    cases = [
        ({"eval_config": str(tmp_path / "eval.yaml")}, "--eval_config .*eval.yaml: .*temperature must be >= 0"),
        ({"round_sft_config": str(tmp_path / "round.yaml")}, "--round_sft_config .*round.yaml: --learning_rate must"),
        ({"init_model_config": str(tmp_path / "init.yaml")}, "--init_model_config .*init.yaml: --num_hidden_layers"),
    ]
    for changes, message in cases:
        with pytest.raises(ValueError, match=message):
            Study(_study_args(tmp_path, **changes))
        assert not (tmp_path / "study").exists()  # nothing was written
    with pytest.raises(ValueError, match="search_temperature=-1.0: must be >= 0"):
        _study_args(tmp_path, search_temperature=-1.0)
    with pytest.raises(ValueError, match="round_eval_decoders: Decoder spec 'beam:q=1': unknown option"):
        _study_args(tmp_path, round_eval_decoders=["greedy", "beam:q=1"])


def test_study_names_recipes_dir_when_the_sub_recipes_are_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(FileNotFoundError, match=r"--recipes_dir '.*nowhere': no such folder\. Set --recipes_dir"):
        Study(_study_args(tmp_path, recipes_dir=str(tmp_path / "nowhere")))
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "sft.py").write_text("")
    message = r"--recipes_dir '.*partial': the folder has no build_dataset.py, init_model.py, evaluate_decoders.py"
    with pytest.raises(FileNotFoundError, match=message):
        Study(_study_args(tmp_path, recipes_dir=str(tmp_path / "partial")))
    assert not (tmp_path / "study").exists()  # nothing was written
    assert find_recipes_dir(None) == ROOT / "recipes"  # unset: ./recipes
    assert find_recipes_dir(None, default=ROOT / "recipes") == ROOT / "recipes"  # the running script's folder
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"--recipes_dir \(unset: ./recipes in .*\): no such folder"):
        find_recipes_dir(None)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["recipes/init_model.py", "--num_hidden_layers", "-1"], "--num_hidden_layers must be a positive integer"),
        (["recipes/evaluate_decoders.py", "--model_name_or_path", "no/such/folder", "--max_problems", "2"],
         "'no/such/folder': no such folder"),
        (["recipes/evaluate_decoders.py", "--decoders", "self_backtracking:bb=1"], "unknown option(s) 'bb'"),
    ],
)  # fmt: skip
def test_recipes_print_one_line_without_a_traceback(argv, message, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("BACKTRACK_TRL_TRACEBACK", None)
    argv = argv + ["--output_dir", str(tmp_path / "out")]
    result = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]


def test_a_folder_where_a_file_is_expected_names_the_option(tmp_path):
    from backtrack_trl.study.harvest import read_pool_file
    from backtrack_trl.viz.search_tree import load_generation

    with pytest.raises(IsADirectoryError, match=r"--pool_file '.*' is a folder, not a file: give a JSON-lines file"):
        read_pool_file(tmp_path, "countdown")
    with pytest.raises(IsADirectoryError, match=r"--generations '.*' is a folder, not a file: evaluation writes"):
        load_generation(tmp_path, 0)
    with pytest.raises(FileNotFoundError, match=r"--pool_file '.*nope.jsonl' does not exist"):
        read_pool_file(tmp_path / "nope.jsonl", "countdown")


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_study_checks_launch_paths_and_vllm_before_the_first_stage(tmp_path, monkeypatch, capsys):
    import signal

    from backtrack_trl.study import runner

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # main's SIGTERM handler: not in the test process
    monkeypatch.setattr(runner, "run_stage", lambda *args: pytest.fail("a stage ran"))
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "not_accelerate.yaml").write_text("num_procesess: 2\n")
    (tmp_path / "a_file").write_text("x")
    sft = (TINY / "sft" / "config_self_correct.yaml").read_text() + "\nlearning_rate: -1.0\n"
    (tmp_path / "correction.yaml").write_text(sft)
    no_vllm = str(ROOT / ".venv" / "bin" / "python")  # the test environment has no vLLM
    serve = {"search_backend": "vllm", "vllm_serve": True}
    cases = [
        ({"accelerate_config": str(tmp_path / "nope.yaml")}, r"--accelerate_config '.*nope.yaml' does not exist"),
        ({"accelerate_config": str(tmp_path / "folder.yaml")}, r"--accelerate_config '.*folder.yaml' is a folder"),
        ({"eval_accelerate_config": str(tmp_path / "not_accelerate.yaml")},
         r"--eval_accelerate_config '.*not_accelerate.yaml' is not an accelerate config \(.*\): start from one in"),
        ({"correction_sft_config": str(tmp_path / "correction.yaml")},
         r"--correction_sft_config .*correction.yaml: --learning_rate must be > 0"),
        ({**serve, "vllm_python": str(tmp_path / "nowhere" / "python")}, r"--vllm_python '.*nowhere/python' cannot run"),
        ({**serve, "vllm_python": no_vllm}, r"--vllm_python '.*' has no vLLM: .*\.venv-vllm/bin/python .*make vllm-env"),
        ({"search_backend": "vllm"}, r"search_backend 'vllm' runs vLLM in this process, but vLLM is not installed"),
        ({"round_eval_decoders": ["self_backtracking:n=2,backend=vllm"]}, r"round_eval_decoders 'self_backt.*not inst"),
        ({"vllm_server_args": "--dtype 'float32"}, r"--vllm_server_args \"--dtype 'float32\": No closing quotation"),
        ({"output_dir": str(tmp_path / "a_file")}, r"--output_dir '.*a_file' is a file: give a study folder"),
    ]  # fmt: skip
    study = tmp_path / "study"
    study.mkdir()
    (study / "mine.txt").write_text("a file of the user's")
    before = _tree(tmp_path)
    for changes, message in cases:
        args = _study_args(tmp_path, **changes)
        with pytest.raises(SystemExit) as exit_info:
            runner.main(args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 1 and err.count("\n") == 2 and re.search(message, err), (changes, err)
        assert _tree(tmp_path) == before  # the study folder (and everything else) untouched


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _random_model(folder: Path) -> Path:
    """An untrained tiny Countdown model: its search keeps nothing."""
    from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer
    from backtrack_trl.training.model_init import init_tiny_llama, save_model_and_tokenizer

    tokenizer = build_countdown_tokenizer()
    model = init_tiny_llama(
        tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    save_model_and_tokenizer(model, tokenizer, folder)
    return folder


VLLM_SPEC = "self_backtracking:n=2,b=0,backend=vllm"
HARVEST = ["recipes/harvest.py", "--output_dir", "{tmp}/out", "--config_name", "round_1", "--progress", "false"]


# (argv with {tmp} / {port} / {model} placeholders, exit code, words of the one error line)
ONE_LINE_CASES = {
    "--method DPO": (["recipes/preference.py", "--method", "DPO", "--output_dir", "{tmp}/out"], 2,
                     "error: --method: invalid choice 'DPO'; choose from 'dpo', 'kto' (did you mean 'dpo'?)"),
    "--stage trian": (["recipes/reward_model.py", "--stage", "trian", "--output_dir", "{tmp}/out"], 2,
                      "error: --stage: invalid choice 'trian'; choose from 'data', 'train', 'all' (did you mean 'train'?)"),
    "unknown flag": (["recipes/sft.py", "--config", "recipes/countdown-tiny/sft/config_backtrack.yaml",
                      "--output_dir", "{tmp}/out", "--lerning_rate", "1"], 2,
                     "error: unknown option --lerning_rate: did you mean --learning_rate? List the options with --help."),
    "unknown flag, no --config": (["recipes/reproduce.py", "--sed", "4"], 2, "unknown option --sed: did you mean --seeds?"),
    "--config folder": (["recipes/evaluate_decoders.py", "--config", "{tmp}/a_folder"], 1,
                        "error: --config '{tmp}/a_folder' is a folder, not a YAML file"),
    "--pool_file folder": ([*HARVEST, "--model_name_or_path", "{tmp}/model", "--pool_file", "{tmp}/a_folder"], 1,
                           "error: --pool_file '{tmp}/a_folder' is a folder, not a file: give a JSON-lines file"),
    "--generations folder": (["recipes/visualize_search.py", "--generations", "{tmp}/a_folder", "--index", "0",
                              "--output", "{tmp}/out/tree.html"], 1, "error: --generations '{tmp}/a_folder' is a folder"),
    "unknown task": (["recipes/build_dataset.py", "--task", "sudok", "--output_dir", "{tmp}/out"], 1,
                     "(did you mean 'sudoku'?)"),
    "vLLM server not running": (["recipes/evaluate_decoders.py", "--decoders", VLLM_SPEC, "--output_dir", "{tmp}/out",
                                 "--vllm_server_base_url", "http://127.0.0.1:{port}"], 1,
                                "error: --vllm_server_base_url http://127.0.0.1:{port}: no vLLM server answers there"),
    "vLLM not installed": (["recipes/evaluate_decoders.py", "--decoders", VLLM_SPEC, "--output_dir", "{tmp}/out"], 1,
                           "vLLM is not installed in this environment"),
    "bad accelerate_config": (["recipes/self_improve.py", "--config",
                               "recipes/countdown-tiny/self_improve/config_default.yaml", "--output_dir", "{tmp}/out",
                               "--accelerate_config", "{tmp}/a_folder/cpu.yaml"], 1,
                              "error: --accelerate_config '{tmp}/a_folder/cpu.yaml' does not exist"),
    "empty harvest": ([*HARVEST, "--model_name_or_path", "{model}", "--pool_file", "{tmp}/pool.jsonl",
                       "--search", "self_backtracking:n=2,b=0,max_new_tokens=8", "--mistakes_per_problem", "0"], 1,
                      "nothing to train on: the strict checker accepted no path and no mistake row was found on 2 pool "
                      "problems (search accuracy 0.0%"),
}  # fmt: skip


# A model's search and the study's checks take longest (over 10 s on 2 busy cores): in the slow run.
SLOW_CASES = ("empty harvest", "bad accelerate_config")


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in ONE_LINE_CASES]
)
def test_recipes_refuse_in_one_line_and_leave_the_folder_as_it_was(case, tmp_path):
    import importlib.util

    argv, code, words = ONE_LINE_CASES[case]
    if case == "vLLM not installed" and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed in this environment")
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("a file of the user's")
    (tmp_path / "pool.jsonl").write_text(
        '{"numbers": [3, 5, 2], "target": 16}\n{"numbers": [4, 6, 1], "target": 25}\n'
    )
    values = {"tmp": str(tmp_path), "port": str(_free_port()), "model": str(tmp_path / "model")}
    if case == "empty harvest":
        _random_model(tmp_path / "model")
    before = _tree(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("BACKTRACK_TRL_TRACEBACK", None)
    command = [sys.executable, *(item.format(**values) for item in argv)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "usage:" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words.format(**values) in errors[0], result.stderr[-2000:]
    assert _tree(tmp_path) == before  # nothing written, nothing removed
