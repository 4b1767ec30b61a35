"""The output folder of a training recipe (``recipes/sft.py``, ``preference.py``, ``reward_model.py``): refuse a
folder that holds something else, recognise a finished run, continue an interrupted one.

:func:`plan_run` runs before anything is loaded, in every process, and decides from what the folder holds:

- absent or empty: a fresh run;
- ``--overwrite_output_dir``: a fresh run into it, whatever it holds (the checkpoints and run record of an earlier
  run are removed, so a later resume cannot pick them up);
- anything that is not a training run's own output (a dataset card and ``data/``, a starting model that no run
  trained, the recipe's own ``--model_name_or_path``, a run of another recipe or other settings): FileExistsError
  naming the folder, what is in it and the fix (a new ``--output_dir``, or ``--overwrite_output_dir``);
- the finished run of the same settings (``training_run.json`` says finished, the final weights are there): nothing
  to do, one log line, and the recorded metrics are returned: a rerun never adds a step nor rewrites
  ``train_results.json``;
- the same settings, not finished: continue from the newest complete checkpoint
  (:func:`~backtrack_trl.training.checkpoints.resume_checkpoint`); more ``max_steps`` / ``num_train_epochs`` than
  a recorded run: continue training it.

``training_run.json`` (the recipe, its settings and, once finished, the returned metrics) is written by world
process zero just before training starts and again, as the last file, when the run is finished. Options that do
not change the trained weights (logging, saving, the Hub, workers, evaluation) are left out of the comparison.

Usage:

```python
import tempfile
from pathlib import Path

from backtrack_trl.training.run_folder import plan_run

folder, config = tempfile.mkdtemp(), {"training": {"learning_rate": 0.002}}
plan = plan_run("sft", config, folder, overwrite=False)
assert plan.finished is None  # an empty folder: train
plan.record()  # just before training: the settings
(Path(folder) / "model.safetensors").write_bytes(b"")  # (the trainer saves the model)
plan.record(metrics={"train_loss": 0.5})  # the last write of a finished run
assert plan_run("sft", config, folder, overwrite=False).finished == {"train_loss": 0.5}  # a rerun: nothing to do
```
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from backtrack_trl.atomic_io import atomic_write_json
from backtrack_trl.training.checkpoints import CHECKPOINT_RE, INCOMPLETE_PREFIX, WEIGHT_FILES, scan_checkpoints


logger = logging.getLogger(__name__)

RUN_RECORD = "training_run.json"
#: The ``help`` of every trainer recipe's ``overwrite_output_dir`` option (transformers 5 dropped its own).
OVERWRITE_HELP = (
    "Train from scratch into an --output_dir that holds something else (another run, other settings, files a run "
    "does not write): its checkpoints are removed and files of the same name replaced. Without it such a folder "
    "is refused, a finished run of the same settings is left alone and an interrupted one continues."
)
#: Settings that change what a run trains by only extending it: a recorded run with fewer continues.
EXTENDABLE = ("max_steps", "num_train_epochs")
#: Options that do not change the trained weights (logging, saving, the Hub, workers, evaluation), left out of the
#: comparison of two runs' settings.
NOT_SETTINGS = frozenset(
    """output_dir resume_from_checkpoint overwrite_output_dir push_to_hub hub_always_push hub_model_id
    hub_private_repo hub_revision hub_strategy hub_token report_to run_name project trackio_bucket_id trackio_space_id
    trackio_static_space_id logging_steps logging_strategy logging_first_step logging_nan_inf_filter log_level
    log_level_replica log_on_each_node disable_tqdm save_steps save_strategy save_total_limit save_only_model
    save_on_each_node dataloader_num_workers dataloader_persistent_workers dataloader_prefetch_factor
    dataloader_pin_memory dataloader_multiprocessing_context local_rank ddp_timeout skip_memory_metrics debug
    dataset_num_proc do_train do_eval do_predict device stage overwrite_dataset eval_strategy eval_steps eval_delay
    eval_on_start per_device_eval_batch_size eval_accumulation_steps eval_do_concat_batches eval_use_gather_object
    batch_eval_metrics prediction_loss_only include_for_metrics bf16_full_eval fp16_full_eval dataset_test_split
    max_eval_samples""".split()
)
#: What a training run writes into its output folder (besides README.md, a model card of ours).
_OWN_NAMES = frozenset(
    """config.json generation_config.json training_args.bin train_results.json eval_results.json all_results.json
    trainer_state.json provenance.json orm_metrics.json special_tokens_map.json added_tokens.json merges.txt
    adapter_config.json custom_generate runs .cache""".split()
    + [RUN_RECORD]
)
_OWN_PATTERNS = re.compile(
    rf"^(checkpoint-\d+|{INCOMPLETE_PREFIX}checkpoint-\d+|.+\.safetensors|.+\.index\.json|(pytorch_model|adapter_model)"
    r".*\.bin|tokenizer.*|vocab.*|chat_template.*|spiece\.model|\..+\.tmp)$"
)
_MODEL_FILES = ("config.json", "adapter_config.json", *WEIGHT_FILES)
_TRAINING_TRACES = ("train_results.json", "trainer_state.json", RUN_RECORD)
#: Tags of the model cards our trainers write (SFT, DPO / KTO: self-backtracking; the reward model: backtrack-trl).
_OUR_CARD_TAGS = {"self-backtracking", "backtrack-trl"}


def card_front_matter(path: Path) -> dict:
    """The YAML front matter of a card (README.md) as a dict ({} when it has none)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    try:
        front = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return {}
    return front if isinstance(front, dict) else {}


def _is_our_card(path: Path) -> bool:
    front = card_front_matter(path)
    tags = front.get("tags") or []
    return "configs" not in front and bool(_OUR_CARD_TAGS & {str(tag) for tag in tags})


def _is_own(entry: Path) -> bool:
    if entry.name == "README.md":
        return entry.is_file() and _is_our_card(entry)
    return entry.name in _OWN_NAMES or bool(_OWN_PATTERNS.match(entry.name))


def _what_it_is(folder: Path, foreign: list[Path]) -> str:
    names = {entry.name for entry in foreign}
    readme = folder / "README.md"
    if "configs" in (card_front_matter(readme) if readme.is_file() else {}) or "data" in names:
        return " (it looks like a dataset folder)"
    return ""


def _listing(entries: list[Path], limit: int = 6) -> str:
    names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in entries)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _plain(value: Any) -> Any:
    """JSON-ready settings; an existing local path is made absolute, so `data/x` and `./data/x` compare equal."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, str) and value and os.path.exists(value):
        return os.path.realpath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def run_config(script_args, training_args, model_args) -> dict[str, Any]:
    """The settings of a run that decide what it trains, as compared between two runs into one folder."""
    training = training_args.to_dict() if hasattr(training_args, "to_dict") else asdict(training_args)
    sections = {"script": script_args, "training": training, "model": model_args}
    config = {name: {k: v for k, v in _plain(section).items() if k not in NOT_SETTINGS} for name, section in
              sections.items()}  # fmt: skip
    config["training"]["world_size"] = getattr(training_args, "world_size", 1)
    return config


def config_differences(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """``{setting: (old value, new value)}`` over the sections of two :func:`run_config` results."""
    differences = {}
    for section in sorted(set(old) | set(new)):
        before, after = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(before) | set(after)):
            if json.dumps(before.get(key), sort_keys=True) != json.dumps(after.get(key), sort_keys=True):  # NaN == NaN
                differences[key] = (before.get(key), after.get(key))
    return differences


def _format_differences(differences: dict[str, tuple[Any, Any]], limit: int = 4) -> str:
    items = [f"{key}: {old!r} -> {new!r}" for key, (old, new) in differences.items()]
    return "; ".join(items[:limit]) + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def read_record(folder: str | os.PathLike) -> dict | None:
    """``training_run.json`` of ``folder`` (None when missing or unreadable)."""
    path = Path(folder) / RUN_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


@dataclass
class RunPlan:
    """What :func:`plan_run` decided; ``finished`` holds the recorded metrics of a finished run (nothing to do)."""

    recipe: str
    config: dict
    output_dir: Path
    finished: dict | None = None
    notes: list[str] = field(default_factory=list)

    def record(self, metrics: dict | None = None) -> None:
        """Write ``training_run.json`` (call on world process zero): the settings, and ``metrics`` once finished."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        record = {"recipe": self.recipe, "finished": metrics is not None, "config": self.config}
        if metrics is not None:
            record["metrics"] = metrics
        atomic_write_json(self.output_dir / RUN_RECORD, record)


def _is_checkpoint_name(name: str) -> bool:
    """A checkpoint folder's name, complete or set aside as incomplete."""
    return bool(CHECKPOINT_RE.match(name.removeprefix(INCOMPLETE_PREFIX)))


def _start_over(folder: Path, main_process: bool) -> int:
    """Remove an earlier run's checkpoints and run record (``--overwrite_output_dir``); return how many folders."""
    stale = [entry for entry in folder.iterdir() if _is_checkpoint_name(entry.name)]
    if main_process:
        for entry in stale:
            shutil.rmtree(entry, ignore_errors=True)
        (folder / RUN_RECORD).unlink(missing_ok=True)
    return len(stale)


def _fix(recipe: str) -> str:
    return (
        f"Choose a new or empty --output_dir, or pass --overwrite_output_dir to train {recipe} from scratch into it "
        "(files of the same name are replaced)."
    )


def plan_run(
    recipe: str,
    config: dict,
    output_dir: str | os.PathLike,
    overwrite: bool,
    model_name_or_path: str | None = None,
    main_process: bool = True,
) -> RunPlan:
    """Decide what a training run does with ``output_dir`` (see the module docstring); raise FileExistsError for a
    folder it must not write into. ``main_process`` (the first process of the node) is the one that deletes."""
    folder = Path(output_dir)
    plan = RunPlan(recipe, config, folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"--output_dir {str(folder)!r} is a file, not a folder. Choose another --output_dir.")
    entries = list(folder.iterdir()) if folder.is_dir() else []
    if not entries:
        return plan
    if overwrite:
        removed = _start_over(folder, main_process)
        logger.info("--overwrite_output_dir: training %s from scratch into %s (removed %d earlier checkpoint(s)).",
                    recipe, folder, removed)  # fmt: skip
        return plan
    where = f"--output_dir {str(folder)!r}"
    if (
        model_name_or_path
        and os.path.isdir(model_name_or_path)
        and folder.resolve() == Path(model_name_or_path).resolve()
    ):
        raise FileExistsError(
            f"{where} is the starting model (--model_name_or_path): training would write over it. {_fix(recipe)}"
        )
    foreign = [entry for entry in entries if not _is_own(entry)]
    if foreign:
        raise FileExistsError(
            f"{where} holds {_listing(foreign)}, which a {recipe} run does not write{_what_it_is(folder, foreign)}. "
            f"{_fix(recipe)}"
        )
    names = {entry.name for entry in entries}
    has_checkpoints = any(_is_checkpoint_name(name) for name in names)
    record = read_record(folder)
    if record is None:
        model_files = sorted(names & set(_MODEL_FILES))
        if model_files and not has_checkpoints and not names & set(_TRAINING_TRACES):
            raise FileExistsError(
                f"{where} holds a model ({', '.join(model_files)}) that no training run left there (no "
                f"train_results.json, trainer_state.json or checkpoint): a starting model? {_fix(recipe)}"
            )
        return plan  # an interrupted run (or one of an earlier version): continue from its checkpoints
    if record.get("recipe") != recipe:
        raise FileExistsError(
            f"{where} holds the output of a {record.get('recipe')} run ({RUN_RECORD}). {_fix(recipe)}"
        )
    differences = config_differences(record.get("config") or {}, config)
    finished = bool(record.get("finished")) and bool(names & set(_MODEL_FILES))
    state = "finished" if finished else "interrupted"
    if not differences:
        if finished:
            logger.info(
                "%s already holds this finished %s run (%s): nothing to do. To train again, pass a new --output_dir "
                "or --overwrite_output_dir.", folder, recipe, RUN_RECORD,
            )  # fmt: skip
            plan.finished = record.get("metrics") or {}
        return plan
    complete, _ = scan_checkpoints(folder)  # only a run with other settings needs its checkpoints read
    if set(differences) <= set(EXTENDABLE) and complete:
        logger.info("%s: continuing the %s %s run from %s (%s).", folder, state, recipe, complete[-1].name,
                    _format_differences(differences))  # fmt: skip
        return plan
    if not finished and not complete:
        logger.info("%s: the interrupted %s run there had other settings and no checkpoint; starting afresh.",
                    folder, recipe)  # fmt: skip
        return plan
    raise FileExistsError(
        f"{where} holds a {state} {recipe} run with other settings ({_format_differences(differences)}). "
        f"{_fix(recipe)}"
    )


def plan_recipe_run(recipe: str, script_args, training_args, model_args) -> RunPlan:
    """:func:`plan_run` for a training recipe's three argument dataclasses (``script_args.overwrite_output_dir``)."""
    return plan_run(
        recipe,
        run_config(script_args, training_args, model_args),
        training_args.output_dir,
        overwrite=script_args.overwrite_output_dir,
        model_name_or_path=model_args.model_name_or_path,
        main_process=training_args.local_process_index == 0,
    )
