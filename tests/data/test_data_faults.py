"""Fault tests of the recipes that write datasets: ``kill -9`` at a chosen step of the write (the test hook
``BACKTRACK_TRL_TEST_KILL_AT`` of :mod:`backtrack_trl.atomic_io`), then the same command again, compared with an
uninterrupted run: the same files and rows, no temporary left anywhere, earlier configs and splits intact."""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict, load_dataset

from backtrack_trl.atomic_io import KILL_AT_ENV
from backtrack_trl.data.build_config import BuildDatasetArguments, parse_data_args
from backtrack_trl.data.builder import build_and_save, build_dataset
from backtrack_trl.data.hub_layout import dataset_configs, write_hub_dataset
from backtrack_trl.data.preference_pairs import PreferenceDataArguments, build_and_save_preference
from backtrack_trl.tasks.countdown import CountdownConfig


ROOT = Path(__file__).resolve().parents[2]
BUILD = ["--config", str(ROOT / "recipes/countdown-tiny/data/config_backtrack.yaml"), "--num_train_questions", "30",
         "--num_test", "5", "--num_proc", "1"]  # fmt: skip


def _run(recipe: str, args: list, kill_at: str | None = None) -> None:
    """Run ``recipes/<recipe>``; with ``kill_at`` it must die of SIGKILL at that step, otherwise succeed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop(KILL_AT_ENV, None)
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    command = [sys.executable, f"recipes/{recipe}", *map(str, args)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == (-signal.SIGKILL if kill_at else 0), (kill_at, done.stderr[-3000:])


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), the card without its build time."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            files[str(path.relative_to(folder))] = re.sub(rb"Built in [0-9.]+ s", b"Built in _ s", data)
    return files


def _hidden(parent: Path) -> list[str]:
    """Temporaries (dot-names) anywhere under ``parent``."""
    return [str(p.relative_to(parent)) for p in parent.rglob(".*")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted build (in-process: the recipe's own parse and build)."""
    folder = tmp_path_factory.mktemp("reference") / "ds"
    build_and_save(*parse_data_args([*BUILD, "--output_dir", str(folder)]))
    return folder


def test_build_dataset_killed_before_its_new_folder_is_renamed_into_place(reference, tmp_path):
    out = tmp_path / "ds"
    _run("build_dataset.py", [*BUILD, "--output_dir", out], kill_at="directory staged")
    assert not out.exists()
    [leftover] = tmp_path.iterdir()  # the complete-looking temporary is no result
    assert leftover.name.startswith(".ds.tmp-") and (leftover / "README.md").is_file()
    _run("build_dataset.py", [*BUILD, "--output_dir", out])
    assert _hidden(tmp_path) == [] and [p.name for p in tmp_path.iterdir()] == ["ds"]
    assert _files(out) == _files(reference)


def test_build_dataset_overwrite_killed_mid_swap_keeps_the_other_configs(reference, tmp_path):
    # An existing dataset (other seed and sizes) with a round config; `--overwrite` rebuilds its default config and is
    # killed when the old shards are moved aside (the one moment `data/` is missing).
    out = tmp_path / "ds"
    old = BuildDatasetArguments(task="countdown", num_train_questions=10, num_test=3, num_proc=1)
    write_hub_dataset(build_dataset(old, CountdownConfig(num_numbers=3, max_number=20, max_target=100, seed=1)), out)
    write_hub_dataset(DatasetDict({"train": Dataset.from_dict({"x": [1, 2]})}), out, config_name="round_1")
    _run("build_dataset.py", [*BUILD, "--output_dir", out, "--overwrite"], kill_at="old shards moved aside")
    assert not (out / "data").exists() and _hidden(tmp_path)
    _run("build_dataset.py", [*BUILD, "--output_dir", out, "--overwrite"])
    assert _hidden(tmp_path) == [] and dataset_configs(out) == ["default", "round_1"]
    data = {name: blob for name, blob in _files(out).items() if name.startswith("data/")}
    assert data == {name: blob for name, blob in _files(reference).items() if name.startswith("data/")}
    rebuilt, expected = load_dataset(str(out)), load_dataset(str(reference))
    assert {split: rebuilt[split].to_list() for split in rebuilt} == {s: expected[s].to_list() for s in expected}
    assert load_dataset(str(out), "round_1")["train"]["x"] == [1, 2]


def test_build_preference_dataset_killed_between_its_two_configs(reference, tmp_path):
    # A new folder gets both configs or neither: a kill while the second is written leaves no output folder.
    expected = tmp_path / "expected"
    build_and_save_preference(PreferenceDataArguments(source=str(reference), output_dir=str(expected)))
    out = tmp_path / "runs" / "preference"
    args = ["--source", reference, "--output_dir", out]
    _run("build_preference_dataset.py", args, kill_at="card committed")
    assert not out.exists() and [p.name.startswith(".preference.tmp-") for p in out.parent.iterdir()] == [True]
    _run("build_preference_dataset.py", args)
    assert _hidden(out.parent) == [] and dataset_configs(out) == ["pairwise", "unpaired"]
    assert _files(out) == _files(expected)


@pytest.mark.slow
def test_harvest_killed_after_its_card_is_committed(reference, tmp_path):
    # The harvest extends a built dataset with config round_1 and is killed between README.md (the commit point)
    # and the swap of round_1's shards; the rerun finishes the same dataset an uninterrupted harvest writes.
    from _memorized_model import memorized_countdown_model

    from backtrack_trl.tasks import get_task

    task = get_task("countdown")
    rows = load_dataset(str(reference), split="train").to_list()
    pool = list({task.problem_key(p): p for p in map(task.problem_from_row, rows)}.values())[:6]
    model = memorized_countdown_model(tmp_path / "model", pool, steps=60)
    runs = {}
    for name in ("uninterrupted", "killed"):
        runs[name] = tmp_path / name / "ds"
        shutil.copytree(reference, runs[name])
    args = ["--model_name_or_path", model, "--dataset_name", reference, "--pool_size", len(pool),
            "--config_name", "round_1", "--search", "self_backtracking:n=4,b=1,max_new_tokens=32,batch_size=6",
            "--seed", 7, "--progress", "false"]  # fmt: skip
    _run("harvest.py", [*args, "--output_dir", runs["uninterrupted"]])
    _run("harvest.py", [*args, "--output_dir", runs["killed"]], kill_at="card committed")
    assert not (runs["killed"] / "round_1").exists() and _hidden(tmp_path / "killed")
    _run("harvest.py", [*args, "--output_dir", runs["killed"]])
    assert _hidden(tmp_path / "killed") == []
    killed, uninterrupted = _files(runs["killed"]), _files(runs["uninterrupted"])
    assert sorted(killed) == sorted(uninterrupted)
    assert {k: v for k, v in killed.items() if k != "README.md"} == {
        k: v for k, v in uninterrupted.items() if k != "README.md"
    }  # the card differs only in its timings
    assert load_dataset(str(runs["killed"]), "round_1")["train"].num_rows > 0
    earlier = {k: v for k, v in _files(reference).items() if k.startswith("data/")}
    assert {k: v for k, v in killed.items() if k.startswith("data/")} == earlier  # train/test_* untouched
