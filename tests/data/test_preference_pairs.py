"""The preference converter: pairs match their source rows exactly, and a wrong source gives one clear error."""

import subprocess
import sys

import pytest
from datasets import Dataset, DatasetDict, load_dataset

from backtrack_trl.data.build_config import BuildDatasetArguments
from backtrack_trl.data.builder import build_dataset
from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.data.preference_pairs import PreferenceDataArguments, build_and_save_preference, build_preference
from backtrack_trl.tasks.countdown import CountdownConfig


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("source") / "backtrack"
    args = BuildDatasetArguments(num_train_questions=30, num_test=6, num_proc=1)
    write_hub_dataset(build_dataset(args, CountdownConfig(num_numbers=3, max_number=20, max_target=100)), folder)
    return str(folder)


def test_pairs_match_their_source_rows(source, tmp_path):
    output = str(tmp_path / "preference")
    build_and_save_preference(PreferenceDataArguments(source=source, output_dir=output))
    rows = load_dataset(source)["train"]
    optimal = {r["prompt"]: r["completion"] for r in rows if r["kind"] == "optimal"}
    backtrack = [r for r in rows if r["kind"] == "backtrack"]
    pairs = load_dataset(output, "pairwise")["train"]
    assert len(pairs) == len(backtrack) > 0
    for pair, row in zip(pairs, backtrack):
        assert pair["prompt"] == row["prompt"] and pair["chosen"] == optimal[row["prompt"]]
        assert pair["rejected"] == row["prefix"] + row["wrong_step"] and "<backtrack>" not in pair["rejected"]
        assert (pair["numbers"], pair["target"], pair["error_type"]) == (row["numbers"], row["target"],
                                                                          row["error_type"])  # fmt: skip
        assert not pair["chosen"].endswith("</s>")  # TRL appends EOS
    labelled = load_dataset(output, "unpaired")["train"]
    good = [(r["prompt"], r["completion"]) for r in labelled if r["label"]]
    bad = [(r["prompt"], r["completion"]) for r in labelled if not r["label"]]
    assert sorted(good) == sorted({(p["prompt"], p["chosen"]) for p in pairs})
    assert sorted(bad) == sorted((p["prompt"], p["rejected"]) for p in pairs)
    for split in ("test_seen", "test_new"):
        test = load_dataset(output, "pairwise")[split]
        assert len(test) == 6 and all(r["chosen"].endswith("Goal Reached!") and r["rejected"] for r in test)
        assert all(not r["chosen"].startswith(r["rejected"]) for r in test)  # the rejected step leaves the path
    card = open(f"{output}/README.md").read()
    assert source in card and "without `<backtrack>`" in card and f"| `train` | {len(pairs)} |" in card


def test_source_without_contract_columns_or_backtrack_rows(source):
    rows = load_dataset(source)
    no_prefix = DatasetDict({"train": rows["train"].remove_columns("prefix")})
    with pytest.raises(ValueError, match="no column 'prefix'.*build_dataset.py"):
        build_preference(PreferenceDataArguments(source="x"), no_prefix)
    optimal_only = DatasetDict({"train": rows["train"].filter(lambda r: r["kind"] == "optimal")})
    with pytest.raises(ValueError, match="split 'train' has no backtrack rows.*mode: backtrack"):
        build_preference(PreferenceDataArguments(source="x"), optimal_only)
    orphan = DatasetDict({"train": Dataset.from_list([r for r in rows["train"] if r["kind"] == "backtrack"][:1])})
    with pytest.raises(ValueError, match="no optimal row with the same prompt"):
        build_preference(PreferenceDataArguments(source="x"), orphan)


def test_recipe_cli_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "recipes/build_preference_dataset.py", "--source", str(tmp_path / "missing"),
         "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert (
        result.returncode == 1
        and result.stderr.strip().startswith("error: --source")
        and "\n" not in result.stderr.strip()
    )


def test_a_source_of_another_task_names_the_task_option(tmp_path):
    from backtrack_trl.data.build_config import BuildDatasetArguments
    from backtrack_trl.data.builder import build_dataset
    from backtrack_trl.data.hub_layout import write_hub_dataset
    from backtrack_trl.data.preference_pairs import PreferenceDataArguments, build_preference
    from backtrack_trl.tasks.sudoku import SudokuConfig

    source = tmp_path / "sudoku"
    data = build_dataset(
        BuildDatasetArguments(task="sudoku", num_train_questions=6, num_test=2, num_proc=1), SudokuConfig()
    )
    write_hub_dataset(data, source, card="Sudoku")
    with pytest.raises(ValueError, match=r"countdown problem columns \['numbers', 'target'\].*--task"):
        build_preference(PreferenceDataArguments(source=str(source), output_dir=str(tmp_path / "out")))
    built = build_preference(
        PreferenceDataArguments(source=str(source), output_dir=str(tmp_path / "o"), task="sudoku")
    )
    assert len(built["pairwise"]["train"]) > 0 and "puzzle" in built["pairwise"]["train"].column_names


def _model_folder(folder):
    from _training_utils import char_tokenizer, save_tiny_model

    return save_tiny_model(str(folder), char_tokenizer(), hidden_size=16, layers=1)


@pytest.mark.parametrize(
    ("make", "holds"),
    [
        (_model_folder, r"it holds a model \(config\.json, model\.safetensors"),
        (lambda folder: folder.mkdir(), "it is empty"),
        (lambda folder: (folder.mkdir(), (folder / "notes.txt").write_text("x\n")), r"it holds notes\.txt"),
    ],
    ids=["model", "empty", "text-file"],
)
def test_a_source_that_is_not_a_dataset_folder_is_named_with_what_it_holds(make, holds, tmp_path):
    # A model folder made load_dataset's json builder fail on config.json: a raw DatasetGenerationError.
    folder = tmp_path / "src"
    make(folder)
    args = PreferenceDataArguments(source=str(folder), output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=rf"--source '{folder}' is not a Hub-layout dataset folder: {holds}") as info:
        build_and_save_preference(args)
    assert "recipes/build_dataset.py" in str(info.value) and not (tmp_path / "out").exists()


def test_a_source_that_is_a_file_is_named(tmp_path):
    (tmp_path / "rows.parquet").write_text("x")
    args = PreferenceDataArguments(source=str(tmp_path / "rows.parquet"), output_dir=str(tmp_path / "out"))
    with pytest.raises(NotADirectoryError, match="--source .*rows.parquet' is a file, not a dataset folder"):
        build_and_save_preference(args)
