"""The Hub-layout dataset writer: layout, card, named configs, atomicity, offline push."""

import subprocess
import sys

import pytest
import yaml
from datasets import Dataset, DatasetDict, load_dataset

import backtrack_trl.data.hub_layout as hub_dataset
from backtrack_trl.atomic_io import writer_tag
from backtrack_trl.data.hub_layout import HubPushError, dataset_configs, push_hub_dataset, write_hub_dataset


def _splits(offset=0):
    return DatasetDict(
        {
            "train": Dataset.from_dict({"x": [offset + i for i in range(5)], "s": ["a", "b", "c", "d", "e"]}),
            "test_seen": Dataset.from_dict({"x": [offset + 100], "s": ["z"]}),
        }
    )


def _front_matter(folder):
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1]), text


def test_layout_card_and_round_trip(tmp_path):
    folder = tmp_path / "ds"
    write_hub_dataset(_splits(), folder, card={"seed": 7, "mode": "backtrack"})
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "data/test_seen-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
    ]
    meta, text = _front_matter(folder)
    assert len(meta["configs"]) == 1
    assert meta["configs"][0]["config_name"] == "default"
    assert meta["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*"},
        {"split": "test_seen", "path": "data/test_seen-*"},
    ]
    assert {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]} == {"train": 5, "test_seen": 1}
    assert "| `seed` | `7` |" in text
    loaded = load_dataset(str(folder))
    assert set(loaded) == {"train", "test_seen"}
    assert loaded["train"]["x"] == [0, 1, 2, 3, 4] and loaded["train"].column_names == ["x", "s"]


def test_same_name_same_size_folders_do_not_share_the_load_cache(tmp_path):
    # datasets keys its cache on the folder's base name and the card YAML: without the content fingerprint the
    # second folder (same name, same sizes, other values) would load the first one's cached rows.
    first, second = tmp_path / "a" / "same", tmp_path / "b" / "same"
    write_hub_dataset(_splits(0), first)
    write_hub_dataset(_splits(1000), second)
    assert load_dataset(str(first))["train"]["x"] == [0, 1, 2, 3, 4]
    assert load_dataset(str(second))["train"]["x"] == [1000, 1001, 1002, 1003, 1004]
    write_hub_dataset(_splits(2000), first, overwrite=True)
    assert load_dataset(str(first))["train"]["x"][0] == 2000


def test_max_shard_size_splits_like_push_to_hub(tmp_path):
    folder = tmp_path / "ds"
    big = DatasetDict({"train": Dataset.from_dict({"x": list(range(1000))})})  # 8000 bytes of int64
    write_hub_dataset(big, folder, max_shard_size=3000)
    shards = sorted(p.name for p in (folder / "data").iterdir())
    assert shards == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert load_dataset(str(folder))["train"]["x"] == list(range(1000))


def test_named_configs_are_added_and_replaced(tmp_path):
    folder = tmp_path / "ds"
    write_hub_dataset(_splits(), folder, card="Main data.")
    write_hub_dataset(
        DatasetDict({"train": Dataset.from_dict({"x": [42]})}), folder, "Round 1.", config_name="round_1"
    )
    assert dataset_configs(folder) == ["default", "round_1"]
    assert (folder / "round_1" / "train-00000-of-00001.parquet").is_file()
    assert load_dataset(str(folder))["train"]["x"] == [0, 1, 2, 3, 4]  # the default config is untouched
    assert load_dataset(str(folder), "round_1")["train"]["x"] == [42]

    with pytest.raises(FileExistsError, match="already holds the config 'round_1'.*--overwrite"):
        write_hub_dataset(DatasetDict({"train": Dataset.from_dict({"x": [43]})}), folder, config_name="round_1")
    write_hub_dataset(
        DatasetDict({"train": Dataset.from_dict({"x": [43, 44]})}), folder, "Round 1 v2.", True, config_name="round_1"
    )
    assert load_dataset(str(folder), "round_1")["train"]["x"] == [43, 44]
    meta, text = _front_matter(folder)
    assert [c["config_name"] for c in meta["configs"]] == ["default", "round_1"]
    assert "Main data." in text and "Round 1 v2." in text and "Round 1." not in text.replace("Round 1 v2.", "")


def test_existing_folder_needs_overwrite(tmp_path):
    folder = tmp_path / "ds"
    write_hub_dataset(_splits(), folder)
    with pytest.raises(FileExistsError, match="already holds the config 'default'"):
        write_hub_dataset(_splits(10), folder)
    other = tmp_path / "not_a_dataset"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a dataset folder.*--overwrite"):
        write_hub_dataset(_splits(), other)
    assert (other / "notes.txt").read_text() == "keep me"
    write_hub_dataset(_splits(10), folder, overwrite=True)
    assert load_dataset(str(folder))["train"]["x"][0] == 10


def test_exception_mid_write_leaves_previous_state(tmp_path, monkeypatch):
    folder = tmp_path / "ds"
    original = hub_dataset._write_shards

    def write_then_fail(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt  # e.g. Ctrl-C after the shards, before the card

    monkeypatch.setattr(hub_dataset, "_write_shards", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_hub_dataset(_splits(), folder)
    assert list(tmp_path.iterdir()) == []  # no partial folder, no temporary folder

    monkeypatch.setattr(hub_dataset, "_write_shards", original)
    write_hub_dataset(_splits(), folder)
    monkeypatch.setattr(hub_dataset, "_write_shards", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_hub_dataset(_splits(50), folder, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    assert load_dataset(str(folder))["train"]["x"] == [0, 1, 2, 3, 4]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="config_name"):
        write_hub_dataset(_splits(), tmp_path / "a", config_name="data")
    with pytest.raises(ValueError, match="split name"):
        write_hub_dataset(DatasetDict({"bad split": Dataset.from_dict({"x": [1]})}), tmp_path / "b")
    with pytest.raises(ValueError, match="non-empty DatasetDict"):
        write_hub_dataset(DatasetDict(), tmp_path / "c")


def test_push_offline_fails_clearly_after_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "ds"
    write_hub_dataset(_splits(), folder)
    with pytest.raises(HubPushError) as error:
        push_hub_dataset(folder, "someone/countdown")
    message = str(error.value)
    assert f"Dataset saved at {folder}" in message
    assert "HF_HUB_OFFLINE=1" in message and "hf upload someone/countdown" in message
    assert load_dataset(str(folder))["train"].num_rows == 5  # the local copy is complete
    with pytest.raises(ValueError, match="no config 'round_9'"):
        push_hub_dataset(folder, "someone/countdown", config_name="round_9")
    with pytest.raises(ValueError, match="not a dataset folder"):
        push_hub_dataset(tmp_path / "missing", "someone/countdown")


def test_push_to_unreachable_hub_fails_clearly(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    folder = tmp_path / "ds"
    write_hub_dataset(_splits(), folder)
    with pytest.raises(HubPushError, match=f"Dataset saved at {folder}; .*unreachable.*hf upload someone/countdown"):
        push_hub_dataset(folder, "someone/countdown", token="hf_not_a_real_token")


def _rows(folder, config):
    return load_dataset(str(folder), config)["train"]["x"]


@pytest.mark.parametrize("replace", [False, True], ids=["add round_2", "replace round_1"])
def test_a_kill_at_any_step_of_a_config_write_keeps_every_config(tmp_path, monkeypatch, replace):
    # A kill -9 leaves the disk exactly as it is at that instant: snapshot the folder at every step of the write,
    # then recover and load each snapshot as the next run would.
    folder = tmp_path / "round_datasets"
    write_hub_dataset(DatasetDict({"train": Dataset.from_dict({"x": [1, 2]})}), folder, config_name="round_1")
    write_hub_dataset(DatasetDict({"train": Dataset.from_dict({"x": [3]})}), folder, config_name="control_1")
    snapshots = []

    def snapshot(step):
        target = tmp_path / f"snap{len(snapshots)}" / "round_datasets"
        hub_dataset.shutil.copytree(folder, target)
        snapshots.append((step, target))

    monkeypatch.setattr(hub_dataset, "_crash_point", snapshot)
    name = "round_1" if replace else "round_2"
    write_hub_dataset(
        DatasetDict({"train": Dataset.from_dict({"x": [7, 8, 9]})}), folder, overwrite=True, config_name=name
    )
    monkeypatch.setattr(hub_dataset, "_crash_point", lambda step: None)
    steps = [step for step, _ in snapshots]
    expected = ["shards staged", "card staged", "card committed", "new shards in place", "done"]
    if replace:
        expected.insert(3, "old shards moved aside")
    assert steps == expected
    committed = steps.index("card committed")
    for index, (step, snap) in enumerate(snapshots):
        hub_dataset.recover_hub_dataset(snap)
        assert not [p.name for p in snap.iterdir() if p.name.startswith(".")], step  # no leftovers
        new = _rows(snap, name) if name in dataset_configs(snap) else None
        assert new == ([7, 8, 9] if index >= committed else ([1, 2] if replace else None)), step
        if not replace:
            assert _rows(snap, "round_1") == [1, 2], step
        assert _rows(snap, "control_1") == [3], step
        # the rerun writes the config again and keeps the others
        write_hub_dataset(
            DatasetDict({"train": Dataset.from_dict({"x": [5]})}), snap, overwrite=True, config_name=name
        )
        assert _rows(snap, name) == [5] and _rows(snap, "control_1") == [3], step


def test_recovery_restores_a_folder_left_aside_by_a_whole_folder_swap(tmp_path):
    folder = tmp_path / "round_datasets"
    write_hub_dataset(DatasetDict({"train": Dataset.from_dict({"x": [1]})}), folder, config_name="round_1")
    folder.rename(tmp_path / ".round_datasets.old-abc123")  # what a kill between the two renames of v0.1 left
    write_hub_dataset(DatasetDict({"train": Dataset.from_dict({"x": [2]})}), folder, config_name="round_2")
    assert dataset_configs(folder) == ["round_1", "round_2"]
    assert _rows(folder, "round_1") == [1] and _rows(folder, "round_2") == [2]


def test_a_config_is_only_replaced_by_data_of_the_same_splits_and_columns(tmp_path):
    # e.g. `recipes/harvest.py --output_dir <a built dataset> --config_name default` with its implicit overwrite:
    # the dataset's train/test splits must survive, whatever overwrite says.
    folder = tmp_path / "ds"
    write_hub_dataset(_splits(), folder)
    write_hub_dataset(DatasetDict({"train": Dataset.from_dict({"x": [42]})}), folder, config_name="round_1")
    readme = (folder / "README.md").read_text()
    harvest_like = DatasetDict({"train": Dataset.from_dict({"x": [7], "s": ["h"]})})
    with pytest.raises(FileExistsError, match=r"config 'default' .* split\(s\) \['test_seen'\] would be lost"):
        write_hub_dataset(harvest_like, folder, overwrite=True)
    other_columns = DatasetDict({"train": Dataset.from_dict({"y": [1]}), "test_seen": Dataset.from_dict({"y": [2]})})
    with pytest.raises(FileExistsError, match=r"its columns \['x', 's'\] would become \['y'\].*delete"):
        write_hub_dataset(other_columns, folder, overwrite=True)
    with pytest.raises(FileExistsError, match="split"):
        hub_dataset.check_config_write(folder, "default", ["train"], None, overwrite=True)
    assert (folder / "README.md").read_text() == readme
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "data", "round_1"]  # no leftovers either
    assert load_dataset(str(folder))["test_seen"]["x"] == [100] and _rows(folder, "round_1") == [42]
    # the same shape is replaced (a rerun), more splits too (nothing is lost); other configs are kept
    write_hub_dataset(_splits(10), folder, overwrite=True)
    bigger = DatasetDict({**_splits(20), "test_new": Dataset.from_dict({"x": [1], "s": ["n"]})})
    write_hub_dataset(bigger, folder, overwrite=True)
    assert set(load_dataset(str(folder))) == {"train", "test_seen", "test_new"} and _rows(folder, "round_1") == [42]
    assert hub_dataset.config_shape(folder, "default") == (["train", "test_seen", "test_new"], ["x", "s"])
    assert hub_dataset.config_shape(folder, "round_9") is None


def test_a_killed_whole_folder_write_is_no_result_and_the_next_write_tidies_it(tmp_path):
    # What a kill -9 between the staging and the rename of a new dataset folder leaves: a complete-looking dataset in
    # `.ds.tmp-<host>-<pid>-*`. It is no result, and the next write of `ds` (a new folder or a config added to it)
    # deletes it unless its writer still runs.
    host = writer_tag().rpartition("-")[0]
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    stale = [tmp_path / f".ds.tmp-{host}-{process.pid}-{suffix}" for suffix in ("a", "b")]
    live = tmp_path / f".ds.tmp-{writer_tag()}-c"
    for folder in (*stale[:1], live):
        write_hub_dataset(_splits(500), folder)
    folder = tmp_path / "ds"
    assert dataset_configs(folder) == []
    write_hub_dataset(_splits(), folder)
    assert not stale[0].exists() and live.exists()
    stale[1].mkdir()
    write_hub_dataset(DatasetDict({"train": Dataset.from_dict({"x": [42]})}), folder, config_name="round_1")
    assert not stale[1].exists()
    assert load_dataset(str(folder))["train"]["x"] == [0, 1, 2, 3, 4] and _rows(folder, "round_1") == [42]
