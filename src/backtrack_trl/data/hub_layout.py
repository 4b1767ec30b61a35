"""Write a ``DatasetDict`` to a local folder in exactly the layout ``push_to_hub`` creates, and upload it later.

Layout (the default config; a named config ``round_1`` uses ``round_1/`` instead of ``data/``)::

    <folder>/README.md                                  dataset card: YAML front matter with `configs:` + markdown
    <folder>/data/train-00000-of-00001.parquet
    <folder>/data/test_seen-00000-of-00001.parquet

``datasets.load_dataset(folder)`` (or ``load_dataset(folder, "round_1")``) loads it offline, and
``push_hub_dataset(folder, repo_id)`` or ``hf upload <repo_id> <folder> --repo-type dataset`` publishes the same
files. Every write is crash-safe: a kill at any moment leaves each config either as it was or complete, and the
next write (or :func:`recover_hub_dataset`) tidies up what the kill left.

Usage:

```python
import tempfile

from datasets import Dataset, DatasetDict, load_dataset

from backtrack_trl.data.hub_layout import write_hub_dataset

folder = tempfile.mkdtemp() + "/toy"
splits = DatasetDict({"train": Dataset.from_dict({"x": [1, 2, 3]}), "test": Dataset.from_dict({"x": [4]})})
write_hub_dataset(splits, folder, card="A toy dataset.")
write_hub_dataset(DatasetDict({"train": Dataset.from_dict({"x": [5]})}), folder, config_name="round_1")
assert load_dataset(folder)["train"]["x"] == [1, 2, 3]
assert load_dataset(folder, "round_1")["train"]["x"] == [5]
```
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import yaml
from datasets import DatasetDict
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCard, DatasetCardData

from backtrack_trl.atomic_io import atomic_directory, atomic_path, clean_stale_temporaries, crash_point


logger = logging.getLogger(__name__)

CARD_FILENAME = "README.md"
_FINGERPRINT_PREFIX = "backtrack-trl content fingerprint "
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_SECTION_RE = r"<!-- config:{name} -->\n.*?<!-- /config:{name} -->\n"


class HubPushError(RuntimeError):
    """Raised by :func:`push_hub_dataset` when the upload fails; the local folder is complete and untouched."""


def valid_config_name(name: str) -> bool:
    """Letters, digits, '_', '-', '.' (not first), and not 'data' (the default config's folder): a folder name too."""
    return name != "data" and bool(_NAME_RE.fullmatch(name))  # fullmatch: `$` would let a trailing newline in


def config_data_dir(config_name: str) -> str:
    """Folder of a config's parquet shards, as ``push_to_hub`` names it (``data`` for the default config)."""
    return "data" if config_name == "default" else config_name


def read_card(folder: str | os.PathLike) -> DatasetCard | None:
    """The dataset card of ``folder`` (None if there is no README.md)."""
    path = Path(folder) / CARD_FILENAME
    return DatasetCard(path.read_text(encoding="utf-8")) if path.is_file() else None


def dataset_configs(folder: str | os.PathLike) -> list[str]:
    """Names of the configs listed in the YAML front matter of ``folder``'s README.md ([] if none)."""
    card = read_card(folder)
    return list(MetadataConfigs.from_dataset_card_data(card.data)) if card is not None else []


def config_shape(folder: str | os.PathLike, config_name: str) -> tuple[list[str], list[str] | None] | None:
    """(split names, column names) of config ``config_name`` as ``folder``'s README.md records them; None if the
    folder has no such config. The columns are None for a card without ``dataset_info`` (not written by us)."""
    card = read_card(folder)
    if card is None:
        return None
    config = MetadataConfigs.from_dataset_card_data(card.data).get(config_name)
    if config is None:
        return None
    info = DatasetInfosDict.from_dataset_card_data(card.data).get(config_name)
    if info is not None and info.splits:
        splits = list(info.splits)
    else:
        splits = [str(entry["split"]) for entry in config.get("data_files") or [] if isinstance(entry, dict)]
    columns = list(info.features) if info is not None and info.features else None
    return splits, columns


def check_config_write(
    folder: str | os.PathLike,
    config_name: str,
    splits: list[str],
    columns: list[str] | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Raise FileExistsError if writing config ``config_name`` (``splits``, ``columns``) into ``folder`` is refused;
    else return the folder's configs ([]: a new dataset folder).

    The rules of :func:`write_hub_dataset`, callable before the work that produces the data (a search, a build):
    an existing folder that is not a dataset folder, or an existing config, is replaced only with ``overwrite``; and
    even then a config is only replaced by data of the same splits and columns (None: not compared), so a write can
    never drop a split or turn a dataset's own config into another kind of data (e.g. a harvest written as config
    ``default`` of the dataset it was drawn from). Other configs are never touched.
    """
    folder = Path(folder)
    existing_configs = dataset_configs(folder)
    if folder.exists() and not existing_configs and not overwrite:
        raise FileExistsError(
            f"The dataset folder {str(folder)!r} already exists and is not a dataset folder with a README.md "
            f"`configs:` section. Pass --overwrite (overwrite=True) to replace it, or choose another output_dir."
        )
    if config_name not in existing_configs:
        return existing_configs
    if not overwrite:
        raise FileExistsError(
            f"The dataset folder {str(folder)!r} already holds the config {config_name!r}. Pass --overwrite "
            f"(overwrite=True) to replace it, or choose another output_dir / config_name."
        )
    old_splits, old_columns = config_shape(folder, config_name) or ([], None)
    lost = [split for split in old_splits if split not in splits]
    changed = columns is not None and old_columns is not None and set(columns) != set(old_columns)
    if lost or changed:
        what = f"its split(s) {lost} would be lost" if lost else f"its columns {old_columns} would become {columns}"
        others = [name for name in existing_configs if name != config_name]
        raise FileExistsError(
            f"Refusing to replace config {config_name!r} of the dataset folder {str(folder)!r} (splits {old_splits}"
            f"{f', other configs {others}' if others else ''}) with different data (splits {list(splits)}): {what}. "
            f"A config is only replaced by data of the same splits and columns. Write to another config_name "
            f"(e.g. round_1) or output_dir; to replace the dataset itself, delete {str(folder)!r} first."
        )
    return existing_configs


def render_card_body(config_name: str, card: str | dict | None, dataset_dict: DatasetDict) -> str:
    """Markdown for one config: ``card`` verbatim if it is a string; a settings table if it is a dict."""
    if isinstance(card, str):
        body = card.strip()
    else:
        lines = [f"Splits: {', '.join(f'`{split}` ({len(ds):,} rows)' for split, ds in dataset_dict.items())}."]
        if card:
            lines += ["", "| setting | value |", "|---|---|"]
            lines += [f"| `{key}` | `{value}` |" for key, value in card.items()]
        body = "\n".join(lines)
    title = "" if config_name == "default" else f"## Config `{config_name}`\n\n"
    return f"<!-- config:{config_name} -->\n{title}{body}\n<!-- /config:{config_name} -->\n"


def _merge_body(old_body: str, config_name: str, section: str) -> str:
    """Replace the config's marked section in ``old_body`` or append it."""
    pattern = re.compile(_SECTION_RE.format(name=re.escape(config_name)), re.DOTALL)
    if pattern.search(old_body):
        return pattern.sub(lambda _: section, old_body)
    return (old_body.rstrip("\n") + "\n\n" + section) if old_body.strip() else section


def content_fingerprint(data_dir: Path) -> str:
    """sha256 (16 hex digits) of the shard files of one config: names and bytes."""
    digest = hashlib.sha256()
    for path in sorted(data_dir.iterdir()):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _write_shards(dataset_dict: DatasetDict, data_dir: Path, max_shard_size: int) -> list[SplitInfo]:
    """``<split>-<i>-of-<n>.parquet`` shards, with ``n`` chosen from the size like ``push_to_hub`` does."""
    data_dir.mkdir(parents=True)
    splits_info = []
    for split, dataset in dataset_dict.items():
        num_bytes = dataset._estimate_nbytes()
        num_shards = int(num_bytes / max_shard_size) + 1
        for index in range(num_shards):
            shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True)
            shard.to_parquet(str(data_dir / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"))
        splits_info.append(SplitInfo(name=split, num_bytes=num_bytes, num_examples=len(dataset)))
    return splits_info


def write_hub_dataset(
    dataset_dict: DatasetDict,
    folder: str | os.PathLike,
    card: str | dict | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = "500MB",
    config_name: str = "default",
) -> Path:
    """Write ``dataset_dict`` as config ``config_name`` of the Hub-layout dataset folder ``folder``; return the path.

    - ``card``: markdown describing this config (a string, written verbatim), or a dict of settings rendered as a
      table; the YAML front matter (``configs`` and ``dataset_info``) is generated.
    - A new folder is created with this one config. An existing dataset folder gets the config added (other configs
      are kept: e.g. ``round_1``, ``round_2`` of a self-improvement loop); a config that is already there, or an
      existing folder that is not a dataset folder, is replaced only with ``overwrite=True``, and a config only by
      data of the same splits and columns (:func:`check_config_write`): no write drops a split or another config.
    - Crash-safe: a new folder is assembled in a temporary sibling and renamed into place; a config added to an
      existing folder is staged beside the others, committed by an atomic replace of README.md, then swapped in,
      never moving the other configs (see :func:`recover_hub_dataset`). An exception leaves the previous state.
    """
    if not isinstance(dataset_dict, DatasetDict) or len(dataset_dict) == 0:
        raise ValueError(f"write_hub_dataset needs a non-empty DatasetDict, got {type(dataset_dict).__name__}.")
    if not valid_config_name(config_name):
        raise ValueError(f"Invalid config_name {config_name!r}: use letters, digits, '_', '-', '.', and not 'data'.")
    for split in dataset_dict:
        if not re.match(r"^\w+$", split):
            raise ValueError(f"Invalid split name {split!r}: use letters, digits and '_' (a Hub split name).")
    folder = Path(folder)
    for action in recover_hub_dataset(folder):
        logger.warning("Recovered an interrupted write in %s: %s", folder, action)
    columns = next(iter(dataset_dict.values())).column_names
    if check_config_write(folder, config_name, list(dataset_dict), columns, overwrite):  # merge into its configs
        _add_config(dataset_dict, folder, card, convert_file_size_to_int(max_shard_size), config_name)
        return folder
    with atomic_directory(folder, overwrite=True, what="dataset folder") as tmp:
        splits_info = _write_shards(
            dataset_dict, tmp / config_data_dir(config_name), convert_file_size_to_int(max_shard_size)
        )
        (tmp / CARD_FILENAME).write_text(
            _card_text(None, dataset_dict, card, config_name, splits_info, tmp / config_data_dir(config_name)),
            encoding="utf-8",
        )
    return folder


def _card_text(
    old_card: DatasetCard | None,
    dataset_dict: DatasetDict,
    card: str | dict | None,
    config_name: str,
    splits_info: list[SplitInfo],
    data_dir: Path,
) -> str:
    """The whole README.md with ``config_name`` added to (or replaced in) ``old_card``'s configs and body."""
    card_data = DatasetCardData(**old_card.data.to_dict()) if old_card is not None else DatasetCardData()
    features = next(iter(dataset_dict.values())).features
    info = DatasetInfo(config_name=config_name, features=features, splits=SplitDict())
    info.dataset_size = 0
    for split_info in splits_info:
        info.splits.add(split_info)
        info.dataset_size += split_info.num_bytes
    DatasetInfosDict({config_name: info}).to_dataset_card_data(card_data)
    data_files = [{"split": split, "path": f"{config_data_dir(config_name)}/{split}-*"} for split in dataset_dict]
    # datasets 5.2 caches a local folder under its base name and a hash of the card's YAML only (not the file
    # contents or path): two folders with the same name and equal sizes, or a folder rewritten with same-sized
    # data, would load the stale cached copy. A content fingerprint in the config's `description` (a standard
    # BuilderConfig field, hashed into the cache key) makes every distinct content a distinct cache entry. It is
    # also what crash recovery compares a config's shard folder against.
    description = f"{_FINGERPRINT_PREFIX}{content_fingerprint(data_dir)}"
    MetadataConfigs({config_name: {"data_files": data_files, "description": description}}).to_dataset_card_data(
        card_data
    )
    body = _merge_body(
        old_card.text if old_card is not None else "", config_name, render_card_body(config_name, card, dataset_dict)
    )
    front_matter = yaml.safe_dump(card_data.to_dict(), sort_keys=False, allow_unicode=True)
    return f"---\n{front_matter}---\n\n{body.lstrip()}"


def _crash_point(step: str) -> None:
    """Called between the steps of a config write; tests replace it to snapshot the folder as a kill would leave it,
    or kill the process there (:func:`backtrack_trl.atomic_io.crash_point`)."""
    crash_point(step)


def _staged(folder: Path, data_dir_name: str, kind: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{data_dir_name}.{kind}-", dir=folder))


def _add_config(
    dataset_dict: DatasetDict, folder: Path, card: str | dict | None, max_shard_size: int, config_name: str
) -> None:
    """Add or replace one config of an existing dataset folder without ever moving the other configs.

    The card is the commit point: the new shards are staged in a hidden sibling, README.md is replaced atomically
    (listing the new shards' fingerprint), and only then is the shard folder swapped in, the old one kept aside
    until the swap is done. A kill at any step leaves either the previous or the new config, and
    :func:`recover_hub_dataset` (run before every write and when a study starts) finishes or undoes the swap.
    """
    data_dir_name = config_data_dir(config_name)
    staged = _staged(folder, data_dir_name, "new")
    try:
        splits_info = _write_shards(dataset_dict, staged / "shards", max_shard_size)
        _crash_point("shards staged")
        text = _card_text(read_card(folder), dataset_dict, card, config_name, splits_info, staged / "shards")
        _atomic_card(folder, text)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    _crash_point("card committed")
    _swap_in(folder, data_dir_name, staged / "shards")
    shutil.rmtree(staged, ignore_errors=True)
    _crash_point("done")


def _atomic_card(folder: Path, text: str) -> None:
    with atomic_path(folder / CARD_FILENAME) as tmp:  # .README.md.<random>.tmp: see recover_hub_dataset
        tmp.write_text(text, encoding="utf-8")
        _crash_point("card staged")


def _swap_in(folder: Path, data_dir_name: str, shards: Path) -> None:
    """Put ``shards`` at ``folder/data_dir_name``; an existing folder there is moved aside first, then deleted."""
    target = folder / data_dir_name
    old = None
    if target.exists():
        old = _staged(folder, data_dir_name, "old")
        os.rmdir(old)
        os.rename(target, old)
        _crash_point("old shards moved aside")
    os.rename(shards, target)
    _crash_point("new shards in place")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _committed_fingerprints(card: DatasetCard | None) -> dict[str, str | None]:
    """Config name -> the content fingerprint README.md records for it (None for folders written before it)."""
    if card is None:
        return {}
    found = {}
    for name, config in MetadataConfigs.from_dataset_card_data(card.data).items():
        description = str(config.get("description") or "")
        found[name] = description[len(_FINGERPRINT_PREFIX) :] if description.startswith(_FINGERPRINT_PREFIX) else None
    return found


def recover_hub_dataset(folder: str | os.PathLike) -> list[str]:
    """Finish or undo a write of :func:`write_hub_dataset` that a kill interrupted; return what was done.

    README.md decides: every config it lists gets the shard folder whose content fingerprint it records (put back
    from a staged or moved-aside copy if the kill came mid-swap); staged copies of writes that never reached
    README.md are deleted. Beside the folder, :func:`~backtrack_trl.atomic_io.clean_stale_temporaries` tidies what
    killed whole-folder writes left, and an untagged ``.<name>.old-*`` of earlier versions beside a missing
    ``<name>`` is renamed back.
    """
    folder = Path(folder)
    # Temporaries of killed writers beside the folder; one it had moved aside for its last rename is put back.
    actions = clean_stale_temporaries(folder)
    if not folder.exists():
        # Untagged backups of earlier versions (a live writer's tagged one is never taken).
        leftovers = sorted(folder.parent.glob(f".{folder.name}.old-*")) if folder.parent.is_dir() else []
        leftovers = [path for path in leftovers if "-" not in path.name.removeprefix(f".{folder.name}.old-")]
        if leftovers and (leftovers[-1] / CARD_FILENAME).is_file():
            os.rename(leftovers[-1], folder)
            actions.append(f"restored {folder.name} from {leftovers[-1].name}")
        else:
            return actions
    card = read_card(folder)
    committed = _committed_fingerprints(card)
    hidden = {entry.name: entry for entry in folder.iterdir() if entry.name.startswith(".")}
    for name, fingerprint in committed.items():
        data_dir_name = config_data_dir(name)
        target = folder / data_dir_name
        if target.is_dir() and (fingerprint is None or content_fingerprint(target) == fingerprint):
            continue
        candidates = [hidden[n] / "shards" for n in hidden if n.startswith(f".{data_dir_name}.new-")]
        candidates += [hidden[n] for n in hidden if n.startswith(f".{data_dir_name}.old-")]
        match = next(
            (c for c in candidates if c.is_dir() and fingerprint and content_fingerprint(c) == fingerprint), None
        )
        if match is None:
            actions.append(f"config {name!r}: no shard folder matches README.md; rewrite it with overwrite=True")
            continue
        if target.exists():
            shutil.rmtree(target)
        os.rename(match, target)
        actions.append(f"config {name!r}: restored its shards from {match.relative_to(folder)}")
    for entry_name, entry in hidden.items():
        if re.match(r"^\.(.+)\.(new|old)-[^/]+$", entry_name) or re.match(
            rf"^\.{re.escape(CARD_FILENAME)}\..*\.tmp$", entry_name
        ):
            if entry.exists():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                actions.append(f"removed the leftover {entry_name}")
    return actions


def push_hub_dataset(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    config_name: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a folder written by :func:`write_hub_dataset` to the dataset repo ``repo_id``; return the commit URL.

    With ``config_name``, only README.md and that config's shard folder are uploaded (other configs already on the
    Hub are kept); otherwise the whole folder. Stale shards of the uploaded configs are deleted on the Hub. Any
    failure (offline, unreachable Hub, missing permissions) raises one :class:`HubPushError` that says the local
    copy is complete and how to upload it later.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    folder = Path(folder)
    configs = dataset_configs(folder) if folder.is_dir() else []
    if not configs:
        raise ValueError(f"{str(folder)!r} is not a dataset folder written by write_hub_dataset (no README configs).")
    if config_name is not None and config_name not in configs:
        raise ValueError(f"{str(folder)!r} has no config {config_name!r}; it has {configs}.")
    uploaded = [config_name] if config_name is not None else configs
    data_dirs = [config_data_dir(name) for name in uploaded]
    later = f"upload it later with `hf upload {repo_id} {folder} --repo-type dataset`"
    try:
        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="dataset",
            allow_patterns=[CARD_FILENAME] + [f"{data_dir}/*" for data_dir in data_dirs],
            delete_patterns=[f"{data_dir}/*" for data_dir in data_dirs],
            commit_message=commit_message or f"Upload {', '.join(uploaded)} with backtrack-trl",
        )
    except OfflineModeIsEnabled as error:
        raise HubPushError(
            f"Dataset saved at {folder}; push to {repo_id!r} failed because offline mode is on (HF_HUB_OFFLINE=1): "
            f"rerun with network access and HF_HUB_OFFLINE=0, or {later}."
        ) from error
    except HfHubHTTPError as error:
        raise HubPushError(
            f"Dataset saved at {folder}; push to {repo_id!r} was refused by the Hub ({error}). Check that you are "
            f"logged in (`hf auth login`) with write access to {repo_id!r}, then rerun or {later}."
        ) from error
    except Exception as error:  # network failures surface as various transport errors
        raise HubPushError(
            f"Dataset saved at {folder}; push to {repo_id!r} failed because the Hub is unreachable "
            f"({type(error).__name__}: {error}): rerun with network access, or {later}."
        ) from error
    return str(commit.commit_url if hasattr(commit, "commit_url") else commit)
