"""The bad-input table (issue 24): every recipe, run the way a user runs it (``python recipes/<name>.py <args>`` in a
subprocess), refuses each bad input with exit code 1 (or argparse's 2), exactly one line on stderr that starts with
``error:`` and says what is wrong, no traceback, and leaves its target path as it was: an existing folder keeps every
file byte for byte (names, sizes, mtimes and sha256), a path that did not exist still does not.

Adding a row: append a ``Case`` to ``CASES``. In ``args``, ``message`` and ``targets``, ``{fx}`` is the module's
fixture folder (built once, see ``fx``: a tiny Countdown dataset, its preference configs, a tiny model, a model whose
tokenizer has no ``<backtrack>``, datasets missing a column or the test splits, broken YAML files, pool files) and
``{out}`` a fresh path that does not exist. ``targets`` defaults to ``{out}``; name the input folders a case must not
touch as well.

The cases run in a pool of 2 threads started by a module fixture, each test waiting for its own case (under
pytest-xdist, which already runs tests side by side, each test runs its case itself). Progress bars are switched off
through the environment, so stderr holds only what the recipe says. Each case starts Python with torch (5-40 s on
two busy cores), so the module is marked slow; ``make test-slow`` runs it.

Usage:

    .venv/bin/python -m pytest -p no:xdist -q tests/recipes/test_bad_input_table.py
    .venv/bin/python -m pytest -p no:xdist -q tests/recipes/test_bad_input_table.py -k "demo or init_model"
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest


pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# A user's shell, minus the noise: no progress bars (datasets, hub, transformers' "Loading weights", tqdm), no
# analytics, offline, and no BACKTRACK_TRL_TRACEBACK (which would show the traceback on purpose).
ENV = {
    **{key: value for key, value in os.environ.items() if key != "BACKTRACK_TRL_TRACEBACK"},
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
}
TIMEOUT_S = 600


@dataclass(frozen=True)
class Case:
    """One bad input: ``python recipes/<recipe>.py <args>`` must fail with ``message`` in its one error line."""

    id: str
    recipe: str
    args: str
    message: str
    targets: tuple[str, ...] = ("{out}",)


DATA = "--config recipes/countdown-tiny/data/config_backtrack.yaml --num_train_questions 20 --num_test 4"
INIT = "--config recipes/countdown-tiny/init_model.yaml"
SFT = "--config recipes/countdown-tiny/sft/config_backtrack.yaml --model_name_or_path {fx}/model --output_dir {out}"
GRPO = (
    "--config recipes/countdown-tiny/grpo/config_default.yaml --model_name_or_path {fx}/model --output_dir {out} "
    "--dataset_name {fx}/data"
)
DPO = (
    "--config recipes/countdown-tiny/preference/config_dpo.yaml --model_name_or_path {fx}/model --output_dir {out} "
    "--dataset_name {fx}/pref"
)
ORM = (
    "--config recipes/countdown-tiny/reward_model/config_default.yaml --policy_model {fx}/model --problems_dataset "
    "{fx}/data --model_name_or_path {fx}/model --preference_dataset {out}/pairs --output_dir {out}"
)
EVAL = (
    "--config recipes/countdown-tiny/eval/config_default.yaml --model_name_or_path {fx}/model --dataset_name {fx}/data "
    "--output_dir {out} --max_problems 2"
)
HARVEST = (
    "--model_name_or_path {fx}/model --pool_size 2 --output_dir {out} --config_name round_1 "
    "--search self_backtracking:n=2,b=0"
)
STUDY = "--config recipes/countdown-tiny/self_improve/config_default.yaml --output_dir {out}"
DRAW = "--model {fx}/model --output {out}/tree.html"
NO_SUCH_FOLDER = "'{fx}/nowhere': no such folder"
NO_BACKTRACK = "has no <backtrack> token"

CASES = [
    # -- build_dataset ------------------------------------------------------------------------------------------------
    Case("data-negative-size", "build_dataset", f"{DATA} --num_train_questions -5 --output_dir {{out}}",
         "num_train_questions=-5"),
    Case("data-unknown-mode", "build_dataset", f"{DATA} --mode sideways --output_dir {{out}}",
         "mode='sideways' is not one of ('backtrack', 'optimal')"),
    Case("data-malformed-error-mix", "build_dataset", f"{DATA} --error_mix 1:x:1 --output_dir {{out}}",
         "error_mix='1:x:1' is malformed"),
    Case("data-negative-ratio", "build_dataset", f"{DATA} --backtrack_ratio -1 --output_dir {{out}}",
         "backtrack_ratio=-1.0 must be"),
    Case("data-unknown-task", "build_dataset", "--task chess --output_dir {out}", "Unknown task 'chess'"),
    Case("data-missing-config", "build_dataset", "--config {fx}/nowhere.yaml --output_dir {out}",
         "--config '{fx}/nowhere.yaml' does not exist"),
    Case("data-config-is-a-folder", "build_dataset", "--config {fx}/data --output_dir {out}",
         "is a folder, not a YAML file", ("{out}", "{fx}/data")),
    Case("data-existing-output", "build_dataset", f"{DATA} --output_dir {{fx}}/data",
         "'{fx}/data' already exists. Pass --overwrite", ("{fx}/data",)),
    Case("data-sudoku-17-givens", "build_dataset", "--task sudoku --size 9 --min_givens 17 --output_dir {out}",
         "min_givens=17 is outside 22..80 for a 9x9 grid"),
    Case("data-sudoku-4x4-used-up", "build_dataset", "--task sudoku --size 4 --min_givens 4 --max_givens 4 "
         "--new_grid_fraction 0.05 --num_train_questions 10 --num_test 1000 --output_dir {out}",
         "Only 840 distinct solvable problems exist for num_test (held-out problems)"),
    Case("data-sudoku-size", "build_dataset", "--task sudoku --size 5 --output_dir {out}",
         "SudokuConfig.size=5 is not supported"),
    Case("data-one-number", "build_dataset", f"{DATA} --num_numbers 1 --output_dir {{out}}",
         "num_numbers=1 is outside 2..6"),
    Case("data-empty-number-range", "build_dataset", f"{DATA} --min_number 10 --max_number 5 --output_dir {{out}}",
         "min_number=10 > max_number=5"),
    Case("data-more-than-exist", "build_dataset", f"{DATA} --num_train_questions 10000000 --output_dir {{out}}",
         "distinct solvable problems exist"),
    Case("data-push-without-id", "build_dataset", f"{DATA} --push_to_hub true --output_dir {{out}}",
         "--push_to_hub needs --hub_dataset_id"),
    Case("data-broken-yaml", "build_dataset", "--config {fx}/yaml/broken.yaml --output_dir {out}",
         "is not valid YAML at line 2, column 5"),
    Case("data-yaml-list", "build_dataset", "--config {fx}/yaml/list.yaml --output_dir {out}",
         "must be a YAML mapping of option: value"),
    Case("data-yaml-bad-value", "build_dataset", "--config {fx}/yaml/badtype.yaml --output_dir {out}",
         "--num_train_questions: invalid int value: 'many'"),
    Case("data-yaml-unknown-key", "build_dataset", "--config {fx}/yaml/unknown.yaml --output_dir {out}",
         "unknown key 'num_train_questionz': did you mean 'num_train_questions'"),
    # -- build_preference_dataset -------------------------------------------------------------------------------------
    Case("pairs-missing-source", "build_preference_dataset", "--source {fx}/nowhere --output_dir {out}",
         "--source '{fx}/nowhere': no such dataset folder"),
    Case("pairs-missing-split", "build_preference_dataset",
         "--source {fx}/data --train_split nosuch --output_dir {out}", "has no split 'nosuch'", ("{out}", "{fx}/data")),
    Case("pairs-existing-config", "build_preference_dataset", "--source {fx}/data --output_dir {fx}/pref",
         "already holds the config 'pairwise'. Pass --overwrite", ("{fx}/pref", "{fx}/data")),
    Case("pairs-unknown-task", "build_preference_dataset", "--source {fx}/data --output_dir {out} --task chess",
         "Unknown task 'chess'"),
    Case("pairs-source-is-a-model", "build_preference_dataset", "--source {fx}/model --output_dir {out}",
         "--source '{fx}/model' is not a Hub-layout dataset folder: it holds a model (config.json",
         ("{out}", "{fx}/model")),
    # -- init_model ---------------------------------------------------------------------------------------------------
    Case("init-indivisible-heads", "init_model", f"{INIT} --hidden_size 30 --output_dir {{out}}",
         "hidden_size=30 must be divisible by num_attention_heads=4"),
    Case("init-kv-heads", "init_model", f"{INIT} --num_key_value_heads 3 --output_dir {{out}}",
         "must be divisible by num_key_value_heads=3"),
    Case("init-zero-layers", "init_model", f"{INIT} --num_hidden_layers 0 --output_dir {{out}}",
         "--num_hidden_layers must be a positive integer, got 0"),
    Case("init-negative-positions", "init_model", f"{INIT} --max_position_embeddings -1 --output_dir {{out}}",
         "--max_position_embeddings must be a positive integer, got -1"),
    Case("init-unknown-tokenizer", "init_model", f"{INIT} --tokenizer klingon --output_dir {{out}}",
         "Could not load the tokenizer 'klingon'"),
    Case("init-existing-output", "init_model", f"{INIT} --output_dir {{fx}}/model",
         "'{fx}/model' already exists. Pass --overwrite", ("{fx}/model",)),
    Case("init-output-is-a-file", "init_model", f"{INIT} --output_dir {{fx}}/afile.txt",
         "exists and is not a folder", ("{fx}/afile.txt",)),
    # -- sft ----------------------------------------------------------------------------------------------------------
    Case("sft-missing-dataset", "sft", f"{SFT} --dataset_name {{fx}}/nowhere", "{fx}/nowhere"),
    Case("sft-missing-column", "sft", f"{SFT} --dataset_name {{fx}}/nocompletion",
         "lacks the column(s) ['completion']", ("{out}", "{fx}/nocompletion")),
    Case("sft-missing-split", "sft", f"{SFT} --dataset_name {{fx}}/data --dataset_train_split nosuch",
         "has no split 'nosuch'", ("{out}", "{fx}/data")),
    Case("sft-negative-learning-rate", "sft", f"{SFT} --dataset_name {{fx}}/data --learning_rate -1",
         "--learning_rate must be > 0, got -1.0"),
    Case("sft-zero-batch", "sft", f"{SFT} --dataset_name {{fx}}/data --per_device_train_batch_size 0",
         "--per_device_train_batch_size must be >= 1, got 0"),
    Case("sft-unknown-error-type", "sft", f"{SFT} --dataset_name {{fx}}/data --trained_error_types nonsense",
         "unknown error type(s) ['nonsense']", ("{out}", "{fx}/model")),
    Case("sft-unknown-task", "sft", f"{SFT} --dataset_name {{fx}}/data --task chess", "Unknown task 'chess'"),
    Case("sft-output-is-a-dataset", "sft", f"{SFT} --dataset_name {{fx}}/data --output_dir {{fx}}/data",
         "which a sft run does not write (it looks like a dataset folder)", ("{fx}/data",)),
    Case("sft-output-is-the-model", "sft", f"{SFT} --dataset_name {{fx}}/data --output_dir {{fx}}/model",
         "is the starting model (--model_name_or_path)", ("{fx}/model",)),
    Case("sft-task-mismatch", "sft", f"{SFT} --dataset_name {{fx}}/data --task sudoku",
         "holds countdown problems", ("{out}", "{fx}/data")),
    # -- grpo ---------------------------------------------------------------------------------------------------------
    Case("grpo-unknown-reward", "grpo", f"{GRPO} --reward_funcs strict corect", "('corect' is not one)"),
    Case("grpo-one-generation", "grpo", f"{GRPO} --num_generations 1", "requires at least 2 generations per prompt"),
    Case("grpo-zero-temperature", "grpo", f"{GRPO} --temperature 0", "--temperature must be > 0"),
    Case("grpo-missing-dataset", "grpo", f"{GRPO} --dataset_name {{fx}}/nowhere", "{fx}/nowhere"),
    Case("grpo-output-is-a-dataset", "grpo", f"{GRPO} --output_dir {{fx}}/data",
         "which a grpo run does not write (it looks like a dataset folder)", ("{fx}/data",)),
    Case("grpo-task-mismatch", "grpo", f"{GRPO} --task sudoku", "holds countdown problems", ("{out}", "{fx}/data")),
    # -- preference ---------------------------------------------------------------------------------------------------
    Case("dpo-missing-dataset", "preference", f"{DPO} --dataset_name {{fx}}/nowhere",
         "dataset_name '{fx}/nowhere': no such dataset folder"),
    Case("dpo-no-pairwise-config", "preference", f"{DPO} --dataset_name {{fx}}/data", "has no config 'pairwise'",
         ("{out}", "{fx}/data")),
    Case("dpo-unknown-method", "preference", f"{DPO} --method ppo", "'ppo'"),
    Case("dpo-negative-learning-rate", "preference", f"{DPO} --learning_rate -1", "--learning_rate must be > 0"),
    Case("dpo-negative-beta", "preference", f"{DPO} --beta -1", "--beta must be > 0, got -1.0",
         ("{out}", "{fx}/model", "{fx}/pref")),
    Case("dpo-output-is-a-dataset", "preference", f"{DPO} --output_dir {{fx}}/pref",
         "which a dpo run does not write (it looks like a dataset folder)", ("{fx}/pref",)),
    Case("dpo-task-mismatch", "preference", f"{DPO} --task sudoku", "holds countdown problems", ("{out}", "{fx}/pref")),
    # -- reward_model -------------------------------------------------------------------------------------------------
    Case("orm-zero-samples", "reward_model", f"{ORM} --num_samples 0", "--num_samples must be >= 1, got 0"),
    Case("orm-missing-problems", "reward_model", f"{ORM} --problems_dataset {{fx}}/nowhere",
         "--problems_dataset '{fx}/nowhere' does not exist"),
    Case("orm-missing-split", "reward_model", f"{ORM} --problems_split nosuch", "--problems_split 'nosuch'",
         ("{out}", "{fx}/data")),
    Case("orm-output-is-the-model", "reward_model", f"{ORM} --output_dir {{fx}}/model",
         "is the starting model (--model_name_or_path)", ("{fx}/model",)),
    # -- evaluate_decoders --------------------------------------------------------------------------------------------
    Case("eval-unknown-decoder-option", "evaluate_decoders", f"{EVAL} --decoders self_backtracking:bb=1",
         "unknown option(s) 'bb' for 'self_backtracking'"),
    Case("eval-unknown-decoder", "evaluate_decoders", f"{EVAL} --decoders dfs", "unknown method 'dfs'"),
    Case("eval-negative-max-problems", "evaluate_decoders", f"{EVAL} --max_problems -1",
         "--max_problems must be a positive number of problems"),
    Case("eval-missing-split", "evaluate_decoders", f"{EVAL} --splits nosuch", "has no split 'nosuch'"),
    Case("eval-no-test-splits", "evaluate_decoders", f"{EVAL} --dataset_name {{fx}}/onlytrain",
         "has no split 'test_seen'", ("{out}", "{fx}/onlytrain")),
    Case("eval-missing-dataset", "evaluate_decoders", f"{EVAL} --dataset_name {{fx}}/nowhere", NO_SUCH_FOLDER),
    Case("eval-missing-model", "evaluate_decoders", f"{EVAL} --model_name_or_path {{fx}}/nowhere", NO_SUCH_FOLDER),
    Case("eval-no-backtrack-token", "evaluate_decoders", f"{EVAL} --model_name_or_path {{fx}}/model_nobt",
         NO_BACKTRACK, ("{out}", "{fx}/model_nobt")),
    Case("eval-output-format", "evaluate_decoders", f"{EVAL} --output_format xml", "--output_format 'xml'"),
    Case("eval-dtype-choice", "evaluate_decoders", f"{EVAL} --dtype float7", "--dtype: invalid choice 'float7'"),
    Case("eval-unknown-task", "evaluate_decoders", f"{EVAL} --task chess", "Unknown task 'chess'"),
    # -- harvest ------------------------------------------------------------------------------------------------------
    Case("harvest-unknown-search-option", "harvest", f"{HARVEST} --dataset_name {{fx}}/data --search "
         "self_backtracking:zz=3", "unknown option(s) 'zz' for 'self_backtracking'"),
    Case("harvest-zero-pool", "harvest", f"{HARVEST} --dataset_name {{fx}}/data --pool_size 0",
         "pool_size=0: must be >= 1"),
    Case("harvest-missing-dataset", "harvest", f"{HARVEST} --dataset_name {{fx}}/nowhere", "{fx}/nowhere"),
    Case("harvest-missing-split", "harvest", f"{HARVEST} --dataset_name {{fx}}/data --dataset_split nosuch",
         "--dataset_split 'nosuch' is not a split", ("{out}", "{fx}/data")),
    Case("harvest-no-backtrack-token", "harvest",
         f"{HARVEST} --dataset_name {{fx}}/data --model_name_or_path {{fx}}/model_nobt", NO_BACKTRACK),
    Case("harvest-two-pools", "harvest", f"{HARVEST} --dataset_name {{fx}}/data --pool_file {{fx}}/pool.jsonl",
         "exactly one of --pool_file"),
    Case("harvest-missing-pool-file", "harvest", f"{HARVEST} --pool_file {{fx}}/nowhere.jsonl",
         "--pool_file '{fx}/nowhere.jsonl' does not exist"),
    Case("harvest-malformed-pool-file", "harvest", f"{HARVEST} --pool_file {{fx}}/badpool.jsonl",
         "line 1 is not JSON"),
    Case("harvest-keep-choice", "harvest", f"{HARVEST} --dataset_name {{fx}}/data --keep sometimes",
         "--keep: invalid choice 'sometimes'"),
    Case("harvest-negative-replay", "harvest", f"{HARVEST} --dataset_name {{fx}}/data --replay_ratio -1",
         "replay_ratio=-1.0"),
    Case("harvest-empty-config-name", "harvest", f"{HARVEST} --dataset_name {{fx}}/data --config_name ''",
         "--config_name '' cannot name a dataset config", ("{out}", "{fx}/data", "{fx}/model")),
    # -- self_improve -------------------------------------------------------------------------------------------------
    Case("study-negative-rounds", "self_improve", f"{STUDY} --rounds -1", "rounds=-1: must be >= 0"),
    Case("study-zero-pool", "self_improve", f"{STUDY} --pool_size 0", "pool_size=0: must be >= 1"),
    Case("study-zero-search-n", "self_improve", f"{STUDY} --search_n 0", "search_n=0 must be >= 1"),
    Case("study-negative-temperature", "self_improve", f"{STUDY} --search_temperature -1",
         "search_temperature=-1.0: must be >= 0"),
    Case("study-missing-eval-config", "self_improve", f"{STUDY} --eval_config {{fx}}/nowhere.yaml",
         "--eval_config '{fx}/nowhere.yaml' does not exist"),
    Case("study-unknown-task", "self_improve", f"{STUDY} --task chess", "Unknown task 'chess'"),
    # -- reproduce ----------------------------------------------------------------------------------------------------
    Case("seeds-missing-config", "reproduce", "--config {fx}/nowhere.yaml --output_dir {out}",
         "--config '{fx}/nowhere.yaml' does not exist"),
    Case("seeds-none-given", "reproduce", f"{STUDY} --seeds", "--seeds: expected at least one argument"),
    Case("seeds-duplicate", "reproduce", f"{STUDY} --seeds 1 1", "seed 1 is given twice"),
    Case("seeds-report-without-studies", "reproduce", "--report_only true --output_dir {out}",
         "seed 42 has no study folder"),
    # -- visualize_search ---------------------------------------------------------------------------------------------
    Case("draw-zero-n", "visualize_search", f"{DRAW} --numbers 3 5 2 --target 16 --n 0",
         "n (samples per state, N) must be an integer in [1, 4096], got 0"),
    Case("draw-negative-b", "visualize_search", f"{DRAW} --numbers 3 5 2 --target 16 --b -1",
         "b (backtracking rounds) must be an integer in [0, 64], got -1"),
    Case("draw-no-numbers", "visualize_search", f"{DRAW} --numbers --target 16", "--numbers: expected at least one"),
    Case("draw-unknown-selection", "visualize_search", f"{DRAW} --numbers 3 5 2 --target 16 --selection best",
         "selection='best' is not one of"),
    Case("draw-negative-temperature", "visualize_search", f"{DRAW} --numbers 3 5 2 --target 16 --temperature -1",
         "temperature must be >= 0"),
    Case("draw-model-and-generations", "visualize_search", f"{DRAW} --generations {{fx}}/nowhere.jsonl --index 0",
         "Give either --model"),
    Case("draw-missing-model", "visualize_search", "--model {fx}/nowhere --numbers 3 5 2 --target 16 --output "
         "{out}/tree.html", NO_SUCH_FOLDER),
    # -- demo (no output folder: the model folder it reads must stay as it is) ----------------------------------------
    Case("demo-zero-n", "demo", "--model {fx}/model --n 0", "--n=0 is outside 1..64", ("{fx}/model",)),
    Case("demo-b-too-large", "demo", "--model {fx}/model --b 7", "--b=7 is outside 0..3", ("{fx}/model",)),
    Case("demo-negative-target", "demo", "--model {fx}/model --target -3", "--target=-3 is outside",
         ("{fx}/model",)),
    Case("demo-one-number", "demo", "--model {fx}/model --numbers 3", "--numbers has 1 numbers; give 2..8",
         ("{fx}/model",)),
    Case("demo-missing-model", "demo", "--model {fx}/nowhere", NO_SUCH_FOLDER, ("{fx}/nowhere",)),
    Case("demo-no-backtrack-token", "demo", "--model {fx}/model_nobt", NO_BACKTRACK, ("{fx}/model_nobt",)),
]  # fmt: skip
RECIPES = sorted(path.stem for path in (ROOT / "recipes").glob("*.py"))


def test_the_table_covers_every_recipe_with_distinct_ids():
    assert len({case.id for case in CASES}) == len(CASES)
    assert {case.recipe for case in CASES} == set(RECIPES)
    assert len(CASES) >= 40


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    """The inputs the cases point at, built once in this process (no recipe subprocess)."""
    from _training_utils import char_tokenizer, sample_rows, save_tiny_model, write_hub_folder

    from backtrack_trl.data.build_config import parse_data_args
    from backtrack_trl.data.builder import build_and_save
    from backtrack_trl.data.preference_pairs import PreferenceDataArguments, build_and_save_preference
    from backtrack_trl.training.model_init import InitModelArguments, init_model

    root = tmp_path_factory.mktemp("bad_input_fx")
    args, config = parse_data_args([*shlex.split(DATA), "--num_proc", "1", "--output_dir", str(root / "data")])
    build_and_save(args, config)
    build_and_save_preference(PreferenceDataArguments(source=str(root / "data"), output_dir=str(root / "pref")))
    init_model(
        InitModelArguments(
            output_dir=str(root / "model"), tokenizer="countdown", hidden_size=32, intermediate_size=64,
            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=128,
        )
    )  # fmt: skip
    save_tiny_model(str(root / "model_nobt"), char_tokenizer(backtrack=False), hidden_size=32, layers=1)
    rows = sample_rows(4)
    no_completion = [{key: value for key, value in row.items() if key != "completion"} for row in rows]
    write_hub_folder(str(root / "nocompletion"), {"train": no_completion, "test_seen": no_completion[:2]})
    write_hub_folder(str(root / "onlytrain"), {"train": rows})
    (root / "yaml").mkdir()
    (root / "yaml" / "broken.yaml").write_text("output_dir: [unclosed\nseed: 1\n")
    (root / "yaml" / "list.yaml").write_text("- 1\n- 2\n")
    (root / "yaml" / "badtype.yaml").write_text("num_train_questions: many\n")
    (root / "yaml" / "unknown.yaml").write_text("num_train_questionz: 5\n")
    (root / "afile.txt").write_text("not a folder\n")
    (root / "pool.jsonl").write_text(json.dumps({"numbers": [3, 5, 2], "target": 16}) + "\n")
    (root / "badpool.jsonl").write_text('{"numbers": [3, 5\n')
    return root


def snapshot(path: Path) -> dict[str, tuple] | None:
    """Names, sizes, mtimes and sha256 of everything under ``path`` (None: the path does not exist)."""
    if not path.exists() and not path.is_symlink():
        return None
    paths = [path] if path.is_file() else sorted(path.rglob("*"))
    signature = {}
    for item in paths:
        if item.is_file():
            stat = item.stat()
            signature[str(item.relative_to(path))] = (
                stat.st_size, stat.st_mtime_ns, hashlib.sha256(item.read_bytes()).hexdigest()
            )  # fmt: skip
        else:
            signature[str(item.relative_to(path))] = ("folder",)
    return signature


@dataclass
class Outcome:
    returncode: int
    stderr: str
    message: str
    changed: list[str]


def run_case(case: Case, fx: Path, out: Path) -> Outcome:
    def fill(text: str) -> str:
        return text.replace("{fx}", str(fx)).replace("{out}", str(out))

    targets = [Path(fill(target)) for target in case.targets]
    before = [snapshot(target) for target in targets]
    argv = [sys.executable, f"recipes/{case.recipe}.py", *shlex.split(fill(case.args))]
    done = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S)
    changed = [str(t) for t, old in zip(targets, before) if snapshot(t) != old]
    return Outcome(done.returncode, done.stderr, fill(case.message), changed)


@pytest.fixture(scope="module")
def outcomes(request, fx, tmp_path_factory):
    """``outcome(case)``: the case's run. Without xdist, the selected cases of this module start at once in a pool of
    2 threads (in table order) and each test waits for its own."""
    outs = tmp_path_factory.mktemp("bad_input_out")

    def out_of(case: Case) -> Path:
        return outs / case.id / "out"

    for case in CASES:
        out_of(case).parent.mkdir()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        yield lambda case: run_case(case, fx, out_of(case))
        return
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params
    ]
    with ThreadPoolExecutor(2) as pool:
        futures = {case.id: pool.submit(run_case, case, fx, out_of(case)) for case in selected}
        yield lambda case: futures[case.id].result()
        for future in futures.values():
            future.cancel()


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_bad_input_is_one_error_line_and_nothing_changes(case, outcomes):
    outcome = outcomes(case)
    tail = outcome.stderr[-3000:]
    assert outcome.returncode in (1, 2), f"exit code {outcome.returncode}; stderr:\n{tail}"
    assert "Traceback" not in outcome.stderr, tail
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr must be one 'error: ' line:\n{tail}"
    assert outcome.message in lines[0], lines[0]
    assert not outcome.changed, f"changed: {outcome.changed}"
