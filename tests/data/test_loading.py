"""backtrack_trl.data.loading: the one dataset loader of the recipes, with the caller's own error words."""

import contextlib

import pytest
from datasets import Dataset, DatasetDict

from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.data.loading import first_rows, load_hub_dataset, pick_split


@pytest.fixture
def folder(tmp_path):
    rows = [{"numbers": [1, 2], "target": t} for t in range(5)]
    return str(write_hub_dataset(DatasetDict({"train": Dataset.from_list(rows)}), tmp_path / "data"))


def test_a_hub_layout_folder_loads(folder):
    dataset = load_hub_dataset(folder)
    assert list(dataset) == ["train"] and dataset["train"]["target"] == [0, 1, 2, 3, 4]


def test_the_main_process_loads_first(folder):
    calls = []

    class Args:
        @contextlib.contextmanager
        def main_process_first(self, desc):
            calls.append(desc)
            yield

    assert len(load_hub_dataset(folder, training_args=Args())["train"]) == 5
    assert calls == ["load dataset"]


def test_explain_replaces_the_loading_error_or_lets_it_through(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="--dataset_name .*missing") as error:
        load_hub_dataset(missing, explain=lambda e: FileNotFoundError(f"--dataset_name {missing!r}: no such folder"))
    assert error.value.__cause__ is None and error.value.__suppress_context__
    with pytest.raises(Exception) as error:
        load_hub_dataset(missing, explain=lambda e: None)
    assert "--dataset_name" not in str(error.value)


def test_pick_split_raises_the_callers_message(folder):
    dataset = load_hub_dataset(folder)
    assert len(pick_split(dataset, "train", "unused")) == 5
    with pytest.raises(ValueError) as error:
        pick_split(dataset, "test_seen", "no test_seen; set `dataset_test_split`.")
    assert str(error.value) == "no test_seen; set `dataset_test_split`."


def test_first_rows(folder):
    train = load_hub_dataset(folder)["train"]
    assert first_rows(train, None) is train
    assert first_rows(train, 2)["target"] == [0, 1]
    assert len(first_rows(train, 50)) == 5
