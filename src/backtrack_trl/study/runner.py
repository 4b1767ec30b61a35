"""The whole study and the self-improvement loop (expert iteration), resumable stage by stage.

Stages, each recorded in ``<output_dir>/state.json`` once all its outputs are written atomically:

1. ``data_backtrack`` / ``data_optimal``: ``recipes/build_dataset.py`` (same questions and test splits);
2. ``init_model``: ``recipes/init_model.py`` (skipped when the SFT recipes start from a pretrained model);
3. ``sft_optimal`` / ``sft_backtrack``: ``accelerate launch recipes/sft.py`` (so GPU users get DeepSpeed);
4. ``eval_optimal`` / ``eval_backtrack``: ``accelerate launch recipes/evaluate_decoders.py`` (Table 1 decoders);
5. for every round k = 1..R: ``round_k_search`` (``accelerate launch recipes/harvest.py``: the self-backtracking
   search, sharded over processes, on a pool of TRAINING problems, on the HF model or on vLLM; the paths the strict
   checker accepts become round k's Hub-layout dataset), ``round_k_sft`` (fine-tune round k-1's model
   on it through ``recipes/sft.py``) and ``round_k_eval`` (greedy and search on the held-out test splits);
6. ``report``: ``report.md`` with Table 1 (both checkers) and the per-round table, plus PNG plots.

A killed run started again with the same command skips the finished stages and redoes the interrupted one from
scratch (training included, so the datasets match an uninterrupted run exactly); asking for more rounds continues
a finished study. A folder created by a different configuration is refused.

Usage (the default CPU study; ``make self-improve`` runs the same):

```bash
python recipes/self_improve.py --config recipes/countdown-tiny/self_improve/config_default.yaml
```
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backtrack_trl.study.harvest import KEEP_RULES, EmptyHarvestError
from backtrack_trl.study.lock import StudyLockedError, study_lock
from backtrack_trl.study.stage_guard import GRACE_SECONDS, guarded
from backtrack_trl.study.state import StudyState, atomic_write_json
from backtrack_trl.tasks import get_task


logger = logging.getLogger(__name__)

#: The sub-recipes the stages run, looked up in ``--recipes_dir``.
RECIPE_SCRIPTS = ("build_dataset.py", "init_model.py", "sft.py", "evaluate_decoders.py", "harvest.py")
#: Options added after studies were first run, with their defaults: left out of a study's fingerprint while at the
#: default, so folders written before them stay resumable.
ADDED_OPTIONS = {"search_max_new_tokens": 64, "dpo_config": None, "kto_config": None, "reward_model_config": None,
                 "orm_n": [8, 16, 32], "num_processes": None, "search_backend": "hf"}  # fmt: skip


@dataclass
class SelfImproveArguments:
    """Options of ``recipes/self_improve.py``. Paths of sub-recipe configs are relative to the working directory."""

    output_dir: str = field(
        default="results/countdown-tiny",
        metadata={"help": "Study folder: data, models, evaluations, rounds and the report are written under it."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Delete an existing study folder and start again."})
    backtrack_data_config: str = field(
        default="recipes/countdown-tiny/data/config_backtrack.yaml",
        metadata={"help": "recipes/build_dataset.py config of the optimal+backtrack dataset."},
    )
    optimal_data_config: str | None = field(
        default="recipes/countdown-tiny/data/config_optimal.yaml",
        metadata={"help": "recipes/build_dataset.py config of the optimal-only baseline dataset (None: no baseline)."},
    )
    init_model_config: str | None = field(
        default="recipes/countdown-tiny/init_model.yaml",
        metadata={"help": "recipes/init_model.py config (None: the SFT configs' model_name_or_path is used as is)."},
    )
    backtrack_sft_config: str = field(
        default="recipes/countdown-tiny/sft/config_backtrack.yaml",
        metadata={"help": "recipes/sft.py config of the backtrack model (round 0)."},
    )
    optimal_sft_config: str | None = field(
        default="recipes/countdown-tiny/sft/config_optimal.yaml",
        metadata={"help": "recipes/sft.py config of the optimal-only baseline (None: no baseline)."},
    )
    backtrack_model: str | None = field(
        default=None,
        metadata={
            "help": "An already trained backtrack model (folder or Hub id) to self-improve: skips init_model and the "
            "SFT stages (round 0 = this model). It must have the <backtrack> token."
        },
    )
    eval_config: str = field(
        default="recipes/countdown-tiny/eval/config_default.yaml",
        metadata={"help": "recipes/evaluate_decoders.py config with the Table 1 decoders (round 0)."},
    )
    round_sft_config: str = field(
        default="recipes/countdown-tiny/sft/config_round.yaml",
        metadata={"help": "recipes/sft.py config for the round fine-tunes (hyperparameters; paths are set here)."},
    )
    dpo_config: str | None = field(
        default=None,
        metadata={
            "help": "recipes/preference.py config (method dpo): adds the paper's DPO baseline to Table 1 (preference "
            "pairs from the backtrack data, DPO from the optimal-SFT model, greedy evaluation). Off by default: the "
            "CPU study is over its 30-minute budget already."
        },
    )
    kto_config: str | None = field(
        default=None, metadata={"help": "recipes/preference.py config (method kto): the KTO baseline, as dpo_config."}
    )
    reward_model_config: str | None = field(
        default=None,
        metadata={
            "help": "recipes/reward_model.py config: trains an outcome reward model on the optimal-SFT model's "
            "samples of train problems and adds best-of-N selected by it (N in orm_n) to Table 1."
        },
    )
    orm_n: list[int] = field(
        default_factory=lambda: [8, 16, 32], metadata={"help": "N of the best-of-N rows selected by the reward model."}
    )
    round_eval_decoders: list[str] = field(
        default_factory=lambda: ["greedy", "self_backtracking:n=32,b=1"],
        metadata={
            "help": "Decoder specs evaluated after every round (as in recipes/evaluate_decoders.py); the first "
            "search spec is the 'search' column of the per-round table."
        },
    )
    rounds: int = field(default=3, metadata={"help": "Number of self-improvement rounds (more continues a study)."})
    pool_size: int = field(
        default=2000, metadata={"help": "Training problems searched per round (a fresh slice of the train split)."}
    )
    search_n: int = field(default=16, metadata={"help": "Samples per expansion N of the harvesting search."})
    search_b: int = field(default=1, metadata={"help": "Backtracking rounds b of the harvesting search."})
    search_temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the search."})
    search_batch_size: int = field(default=64, metadata={"help": "Problems searched at once."})
    search_max_new_tokens: int = field(
        default=64, metadata={"help": "Response length limit of the harvesting search (tokens; as the eval config's)."}
    )
    search_backend: str = field(
        default="hf",
        metadata={
            "help": "Engine of the harvesting search: 'hf' (the model in each harvest process) or 'vllm' (vLLM; with "
            "vllm_server_base_url every harvest process sends its requests to one server).",
            "choices": ["hf", "vllm"],
        },
    )
    vllm_server_base_url: str | None = field(
        default=None,
        metadata={
            "help": "A vLLM server for the harvest (search_backend vllm), e.g. http://localhost:8000. It must serve the "
            "round's model: the study does not restart it, so on GPU nodes restart the server on each round's model "
            "(see the README) or leave this unset to start an in-process engine per round."
        },
    )
    vllm_serve: bool = field(
        default=False,
        metadata={
            "help": "With search_backend vllm: start a vLLM server on each round's model for its harvest (stopped "
            "after it), from vllm_python with vllm_server_args and vllm_server_env; every harvest process sends its "
            "requests there. The way to give vLLM its own GPUs on one node (see the README)."
        },
    )
    vllm_python: str = field(
        default="python",
        metadata={"help": "Python of the environment with vLLM, for vllm_serve (CPU: .venv-vllm/bin/python)."},
    )
    vllm_server_args: str = field(
        default="",
        metadata={
            "help": "Extra arguments of the vLLM server, e.g. '--data-parallel-size 4 --gpu-memory-utilization 0.9' "
            "(CPU: '--dtype float32 --no-enable-chunked-prefill')."
        },
    )
    vllm_server_env: list[str] = field(
        default_factory=list,
        metadata={"help": "KEY=VALUE environment of the vLLM server, e.g. CUDA_VISIBLE_DEVICES=4,5,6,7."},
    )
    keep: str = field(
        default="best_correct",
        metadata={
            "help": "Which path to keep per problem: 'best_correct' (highest-scoring candidate the strict checker "
            "accepts) or 'chosen' (the search's selected answer, kept only if correct).",
            "choices": list(KEEP_RULES),
        },
    )
    control: bool = field(
        default=True,
        metadata={
            "help": "Also fine-tune the round-0 model on the solver's optimal paths for the problems round 1 kept "
            "(same count, same recipe): tells the gain from the search's own paths apart from more SFT."
        },
    )
    accelerate_config: str = field(
        default="accelerate_configs/cpu.yaml",
        metadata={"help": "accelerate config used to launch training and evaluation."},
    )
    eval_accelerate_config: str | None = field(
        default=None,
        metadata={"help": "accelerate config of the evaluations (None: accelerate_config), e.g. ddp.yaml on GPUs."},
    )
    num_processes: int | None = field(
        default=None,
        metadata={
            "help": "Processes (GPUs) of every accelerate launch, passed as `accelerate launch --num_processes` "
            "(None: the accelerate config's num_processes)."
        },
    )
    recipes_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the sub-recipes the stages run (build_dataset.py, init_model.py, sft.py, "
            "evaluate_decoders.py). None: the folder of the running recipes/self_improve.py, else ./recipes."
        },
    )
    task: str = field(default="countdown", metadata={"help": "Registered task of the study (backtrack_trl.tasks)."})
    seed: int = field(default=42, metadata={"help": "Seed of the pools and the searches."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push each round's dataset as config round_<k>."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Hub dataset id for --push_to_hub."})

    def __post_init__(self):
        # On the command line `--optimal_data_config None` arrives as the string "None": the help says None disables.
        # (The annotations, not the fields' types: HfArgumentParser rewrites `str | None` fields to `str`.)
        for name, annotation in type(self).__annotations__.items():
            value = getattr(self, name)
            if "None" in str(annotation) and isinstance(value, str) and value.strip().lower() in ("none", "null", ""):
                setattr(self, name, None)
        if self.num_processes is not None and self.num_processes < 1:
            raise ValueError(f"num_processes={self.num_processes}: must be >= 1 (or unset for the config's count).")
        if self.rounds < 0:
            raise ValueError(f"rounds={self.rounds}: must be >= 0.")
        if self.pool_size < 1:
            raise ValueError(f"pool_size={self.pool_size}: must be >= 1.")
        if self.search_n < 1 or self.search_b < 0:
            raise ValueError(f"search_n={self.search_n} must be >= 1 and search_b={self.search_b} >= 0.")
        if self.keep not in KEEP_RULES:
            raise ValueError(f"keep={self.keep!r}: choose {' or '.join(map(repr, KEEP_RULES))}.")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("--push_to_hub needs --hub_dataset_id NAME.")
        if not self.search_temperature >= 0:
            raise ValueError(f"search_temperature={self.search_temperature}: must be >= 0 (0 = greedy rows).")
        if self.search_batch_size < 1:
            raise ValueError(f"search_batch_size={self.search_batch_size}: must be >= 1.")
        from backtrack_trl.decoding.api import check_decoder_options
        from backtrack_trl.evaluation import check_decoder_specs

        check_decoder_specs(self.round_eval_decoders, where="round_eval_decoders: ")
        if self.search_backend not in ("hf", "vllm"):
            raise ValueError(f"search_backend={self.search_backend!r}: choose 'hf' or 'vllm'.")
        if self.vllm_serve and self.search_backend != "vllm":
            raise ValueError("vllm_serve: true starts a vLLM server for the harvest: set search_backend: vllm too.")
        if self.vllm_serve and self.vllm_server_base_url:
            raise ValueError(
                "Give vllm_serve (the study starts a server per round) or vllm_server_base_url, not both."
            )
        bad = [item for item in self.vllm_server_env if "=" not in item or not item.split("=", 1)[0]]
        if bad:
            raise ValueError(f"vllm_server_env: {bad[0]!r} is not KEY=VALUE (e.g. CUDA_VISIBLE_DEVICES=4,5,6,7).")
        search = {"n": self.search_n, "b": self.search_b, "temperature": self.search_temperature}
        try:
            check_decoder_options("self_backtracking", {**search, "batch_size": self.search_batch_size})
        except ValueError as error:
            raise ValueError(f"The harvesting search (search_n/search_b/search_temperature): {error}") from None


def thread_setting() -> str:
    """The CPU threads of the study's jobs: training results depend on it (report it with every figure)."""
    import torch

    omp = os.environ.get("OMP_NUM_THREADS")
    return f"OMP_NUM_THREADS={omp}" if omp else f"{torch.get_num_threads()} (torch default, OMP_NUM_THREADS unset)"


class StageFailedError(RuntimeError):
    """A sub-recipe exited with an error (its output was streamed above and saved in the stage log)."""


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} does not exist (check the path in the study config).")
    with open(path) as handle:
        return yaml.safe_load(handle) or {}


def _cli(overrides: dict[str, Any]) -> list[str]:
    args = []
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            args += [f"--{key}", *[str(v) for v in value]]
        else:
            args += [f"--{key}", str(value)]
    return args


def run_logged(cmd: list[str], log_path: Path, pass_fds: tuple[int, ...] = ()) -> None:
    """Run ``cmd`` streaming its output to the console and to ``log_path``; raise with the log's tail on failure.

    The command runs under :mod:`backtrack_trl.study.stage_guard`, in a process group of its own that is stopped when this
    process exits, is signalled or is killed; ``pass_fds`` (the study lock) stay open in the guard until then.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("$ %s", " ".join(cmd))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            guarded(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, pass_fds=pass_fds
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
            code = proc.wait()
        except BaseException:  # Ctrl-C or SIGTERM of the study: stop the stage before going
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=GRACE_SECONDS + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if code != 0:
        last = [line for line in log_path.read_text().splitlines() if line.strip()][-1:] or [""]
        raise StageFailedError(
            f"Command failed with exit code {code}: {' '.join(cmd)}\n  last line: {last[0]}\n  full log: {log_path}"
        )


def find_recipes_dir(
    option: str | os.PathLike | None,
    default: str | os.PathLike | None = None,
    scripts: tuple[str, ...] | list[str] = RECIPE_SCRIPTS,
) -> Path:
    """The folder of the sub-recipes: ``option`` (``--recipes_dir``), else ``default`` (the folder of the running
    ``recipes/self_improve.py``), else ``./recipes``. A FileNotFoundError names ``--recipes_dir`` when the folder or
    one of ``scripts`` is missing (the package does not ship the recipes: they live in the repository)."""
    if option:
        folder, origin = Path(option), f"--recipes_dir {str(option)!r}"
    elif default:
        folder, origin = Path(default), f"--recipes_dir (unset: the folder of self_improve.py, {str(default)!r})"
    else:
        folder, origin = Path("recipes"), f"--recipes_dir (unset: ./recipes in {str(Path.cwd())!r})"
    fix = f"Set --recipes_dir to the repository's recipes/ folder (the one with {', '.join(scripts)})."
    if not folder.is_dir():
        raise FileNotFoundError(f"{origin}: no such folder. {fix}")
    missing = [script for script in scripts if not (folder / script).is_file()]
    if missing:
        raise FileNotFoundError(f"{origin}: the folder has no {', '.join(missing)}. {fix}")
    return folder.resolve()


class Study:
    """Runs the stages of the study in order, skipping those already recorded in ``state.json``.

    ``recipes_dir`` is the sub-recipes' folder used when ``args.recipes_dir`` is None (see :func:`find_recipes_dir`).
    """

    def __init__(
        self,
        args: SelfImproveArguments,
        python: str = sys.executable,
        recipes_dir: Path | None = None,
    ):
        self.args = args
        self.lock_fds: tuple[int, ...] = ()
        self._lock = None
        self.python = python
        init_model = bool(args.init_model_config and not args.backtrack_model)
        needed = [script for script in RECIPE_SCRIPTS if script != "init_model.py" or init_model]
        if args.dpo_config or args.kto_config:
            needed += ["build_preference_dataset.py", "preference.py"]
        if args.reward_model_config:
            needed.append("reward_model.py")
        self.recipes = find_recipes_dir(args.recipes_dir, default=recipes_dir, scripts=needed)
        self.out = Path(args.output_dir)
        self.task = get_task(args.task)
        if args.backtrack_model:  # before anything is written
            self.check_backtrack_model()
        self.validate_sub_configs()
        config = asdict(args)
        if config["task"] == "countdown":  # folders made before tasks were plug-ins stay resumable
            del config["task"]
        for key, default in ADDED_OPTIONS.items():
            if config[key] == default:
                del config[key]
        for key in ("backtrack_data_config", "optimal_data_config", "init_model_config", "backtrack_sft_config",
                    "optimal_sft_config", "eval_config", "round_sft_config", "dpo_config", "kto_config",
                    "reward_model_config"):  # fmt: skip
            if config.get(key):
                config[f"{key}_content"] = read_yaml(config[key])
        # Checks done, nothing written yet: take the folder (one run at a time), then open its state.
        self._lock = study_lock(self.out)
        lock_fd = self._lock.__enter__()
        self.lock_fds = (lock_fd,) if lock_fd >= 0 else ()
        try:
            self.state = self._open_state(config)
        except BaseException:
            self.close()
            raise
        self.t0 = time.time()

    def close(self) -> None:
        """Release the study folder's lock (the end of :meth:`run`, or an error before it)."""
        if self._lock is not None:
            lock, self._lock, self.lock_fds = self._lock, None, ()
            lock.__exit__(None, None, None)

    def _open_state(self, config: dict[str, Any]) -> StudyState:
        # Asking for more rounds, or pushing, continues a study rather than invalidating it.
        return StudyState.open(
            self.out,
            config,
            ignore_keys=(
                "rounds",
                "overwrite",
                "push_to_hub",
                "hub_dataset_id",
                "accelerate_config",
                "eval_accelerate_config",
                "num_processes",
                "recipes_dir",
                # Where the vLLM engine runs does not change what it samples.
                "vllm_server_base_url",
                "vllm_serve",
                "vllm_python",
                "vllm_server_args",
                "vllm_server_env",
                # Adding the optional Table 1 baselines to a finished study only adds stages.
                *(
                    f"{key}{suffix}"
                    for key in ("dpo_config", "kto_config", "reward_model_config", "orm_n")
                    for suffix in ("", "_content")
                ),  # fmt: skip
            ),
            overwrite=self.args.overwrite,
        )

    # -- paths ---------------------------------------------------------------------------------------------------
    def data_dir(self, kind: str) -> Path:
        return self.out / "data" / kind

    def model_dir(self, name: str) -> Path:
        return self.out / "models" / name

    def round_dir(self, k: int) -> Path:
        return self.out / "rounds" / f"round_{k}"

    def round_model(self, k: int) -> Path | str:
        if k == 0:
            return self.args.backtrack_model or self.model_dir("backtrack-sft")
        return self.round_dir(k) / "model"

    # -- stage plumbing --------------------------------------------------------------------------------------------
    def stage(self, name: str, fn, outputs: list[Path]) -> None:
        if self.state.is_done(name) and all(p.exists() for p in outputs):
            logger.info("[%s] already done, skipping", name)
            return
        for path in outputs:  # an interrupted stage starts again from scratch
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        elapsed = time.time() - self.t0
        print(f"\n=== [{time.strftime('%H:%M:%S')}] stage {name} (study time so far {elapsed:.0f}s) ===", flush=True)
        start = time.time()
        fn()
        missing = [str(p) for p in outputs if not p.exists()]
        if missing:
            raise RuntimeError(f"Stage {name} finished without writing {missing}.")
        self.state.mark_done(name, time.time() - start)
        if os.environ.get("BACKTRACK_TRL_STOP_AFTER") == name:  # test hook: simulate a kill after a stage
            raise SystemExit(f"stopping after {name} (BACKTRACK_TRL_STOP_AFTER)")

    def validate_sub_configs(self) -> None:
        """Parse every sub-recipe config with the overrides its stage will get, as the recipe itself does, so that a
        bad value fails now with the file's name, not after the stages before it ran."""
        from trl import TrlParser

        from backtrack_trl.data.build_config import parse_data_args
        from backtrack_trl.evaluation import EvaluationArguments
        from backtrack_trl.training.model_init import InitModelArguments
        from backtrack_trl.training.sft_config import parse_args as parse_sft_args

        def parse_with(dataclass_type):
            def parse(argv):
                (parsed,) = TrlParser((dataclass_type,)).parse_args_and_config(args=argv)
                return parsed

            return parse

        a = self.args
        placeholder = str(self.out / "models" / "init")
        checks = [
            ("backtrack_data_config", a.backtrack_data_config, parse_data_args, {"output_dir": "x"}),
            ("optimal_data_config", a.optimal_data_config, parse_data_args, {"output_dir": "x"}),
            ("init_model_config", a.init_model_config, parse_with(InitModelArguments), {"output_dir": "x"}),
            ("eval_config", a.eval_config, parse_with(EvaluationArguments), {"output_dir": "x"}),
        ]
        for key in ("backtrack_sft_config", "optimal_sft_config", "round_sft_config"):
            sft = {"model_name_or_path": placeholder, "dataset_name": "x", "output_dir": "x", "seed": a.seed}
            checks.append((key, getattr(a, key), parse_sft_args, sft))
        if a.dpo_config or a.kto_config:
            from backtrack_trl.training.preference import parse_preference_args

            for key in ("dpo_config", "kto_config"):
                options = {"model_name_or_path": placeholder, "dataset_name": "x", "output_dir": "x", "task": a.task}
                checks.append((key, getattr(a, key), parse_preference_args, options))
        if a.reward_model_config:
            from backtrack_trl.training.reward_config import parse_args as parse_reward_args

            options = {
                "policy_model": placeholder,
                "model_name_or_path": placeholder,
                "output_dir": "x",
                "task": a.task,
            }
            checks.append(("reward_model_config", a.reward_model_config, parse_reward_args, options))
        for key, path, parse, overrides in checks:
            if not path or (key == "backtrack_sft_config" and a.backtrack_model):
                continue
            try:
                parsed = parse(["--config", str(path), *_cli(overrides)])
                first = parsed[0] if isinstance(parsed, tuple) else parsed
                validate = getattr(first, "validate", None)
                if callable(validate) and key not in ("backtrack_data_config", "optimal_data_config"):
                    validate()
                if getattr(first, "task", a.task) != a.task:
                    raise ValueError(
                        f"its task is {first.task!r} but the study's is {a.task!r}; set `task: {a.task}` in both."
                    )
            except SystemExit as error:  # argparse: the message is on stderr already
                raise ValueError(f"--{key} {path}: the config does not parse (see the message above).") from error
            except ValueError as error:
                raise ValueError(f"--{key} {path}: {error}") from None

    def recipe(self, script: str, config: str, overrides: dict[str, Any], log: str, launch: bool = False) -> None:
        cmd = [self.python]
        if launch:
            accelerate_config = self.args.accelerate_config
            if script in ("evaluate_decoders.py", "harvest.py") and self.args.eval_accelerate_config:
                accelerate_config = self.args.eval_accelerate_config
            # --quiet: a failing recipe's own one-line error is the message, not accelerate's CalledProcessError.
            cmd += ["-m", "accelerate.commands.launch", "--quiet", "--config_file", accelerate_config]
            if self.args.num_processes is not None:
                cmd += ["--num_processes", str(self.args.num_processes)]
        cmd += [str(self.recipes / script), *(["--config", config] if config else []), *_cli(overrides)]
        run_logged(cmd, self.out / "logs" / f"{log}.log", self.lock_fds)

    # -- stages ----------------------------------------------------------------------------------------------------
    def build_data(self) -> None:
        for kind, cfg in (("backtrack", self.args.backtrack_data_config), ("optimal", self.args.optimal_data_config)):
            if cfg:
                out = self.data_dir(kind)
                self.stage(
                    f"data_{kind}",
                    lambda cfg=cfg, out=out, kind=kind: self.recipe(
                        "build_dataset.py", cfg, {"output_dir": out, "overwrite": True}, f"data_{kind}"
                    ),
                    [out],
                )

    def check_backtrack_model(self) -> None:
        from transformers import AutoTokenizer

        from backtrack_trl.tasks.tokenizer import require_backtrack_token

        path = self.args.backtrack_model
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except OSError as error:
            raise FileNotFoundError(f"--backtrack_model {path!r} is not a model folder or Hub id ({error}).") from None
        require_backtrack_token(tokenizer)

    def init_model(self) -> None:
        if self.args.backtrack_model:
            return
        if self.args.init_model_config:
            out = self.model_dir("init")
            self.stage(
                "init_model",
                lambda: self.recipe(
                    "init_model.py",
                    self.args.init_model_config,
                    {"output_dir": out, "seed": self.args.seed},
                    "init_model",
                ),
                [out],
            )

    def _base_model(self, sft_config: str) -> str:
        if self.args.init_model_config:
            return str(self.model_dir("init"))
        return read_yaml(sft_config)["model_name_or_path"]

    def train(self) -> None:
        for kind, cfg in (("optimal", self.args.optimal_sft_config), ("backtrack", self.args.backtrack_sft_config)):
            if not cfg or (kind == "optimal" and not self.args.optimal_data_config):
                continue
            if kind == "backtrack" and self.args.backtrack_model:
                continue
            out = self.model_dir(f"{kind}-sft")
            overrides = {
                "model_name_or_path": self._base_model(cfg),
                "dataset_name": self.data_dir(kind),
                "output_dir": out,
                "seed": self.args.seed,
            }
            self.stage(
                f"sft_{kind}",
                lambda cfg=cfg, overrides=overrides, kind=kind: self.recipe(
                    "sft.py", cfg, overrides, f"sft_{kind}", launch=True
                ),
                [out],
            )

    def evaluate(self, model: Path, data: Path, out: Path, name: str, decoders: list[str] | None = None) -> None:
        overrides = {"model_name_or_path": model, "dataset_name": data, "output_dir": out, "seed": self.args.seed,
                     "task": self.args.task}  # fmt: skip
        if decoders:
            overrides["decoders"] = decoders
        self.stage(
            name,
            lambda: self.recipe("evaluate_decoders.py", self.args.eval_config, overrides, name, launch=True),
            [out],
        )

    def evaluate_round0(self) -> None:
        for kind in ("optimal", "backtrack"):
            model = self.round_model(0) if kind == "backtrack" else self.model_dir("optimal-sft")
            if kind == "optimal" and not (self.args.optimal_sft_config and self.args.optimal_data_config):
                continue
            decoders = None
            if kind == "optimal":  # a model that never saw <backtrack> gets the baselines only
                specs = read_yaml(self.args.eval_config).get("decoders") or []
                decoders = [s for s in specs if s.split(":")[0].strip() not in ("self_backtracking", "released")]
            self.evaluate(model, self.data_dir("backtrack"), self.out / "eval" / kind, f"eval_{kind}", decoders)

    def table1_baselines(self) -> None:
        """The paper's other Table 1 rows, when configured: DPO / KTO on the backtrack data's own pairs (from the
        optimal-SFT model, greedy evaluation) and best-of-N selected by an outcome reward model."""
        a = self.args
        optimal = self.model_dir("optimal-sft")
        if (a.dpo_config or a.kto_config or a.reward_model_config) and not a.optimal_sft_config:
            raise ValueError("dpo_config / kto_config / reward_model_config start from the optimal-SFT model: set "
                             "optimal_sft_config and optimal_data_config too.")  # fmt: skip
        if a.dpo_config or a.kto_config:
            pairs = self.data_dir("preference")
            overrides = {"source": self.data_dir("backtrack"), "output_dir": pairs, "task": a.task, "overwrite": True}
            self.stage(
                "data_preference",
                lambda: self.recipe("build_preference_dataset.py", None, overrides, "data_preference"),
                [pairs],
            )
            for method, cfg in (("dpo", a.dpo_config), ("kto", a.kto_config)):
                if not cfg:
                    continue
                out = self.model_dir(method)
                options = {"model_name_or_path": optimal, "dataset_name": pairs, "output_dir": out, "seed": a.seed,
                           "task": a.task}  # fmt: skip
                self.stage(
                    method,
                    lambda cfg=cfg, options=options, method=method: self.recipe(
                        "preference.py", cfg, options, method, launch=True
                    ),
                    [out],
                )
                self.evaluate(
                    out, self.data_dir("backtrack"), self.out / "eval" / method, f"eval_{method}", ["greedy"]
                )
        if a.reward_model_config:
            out = self.model_dir("reward-model")
            options = {"stage": "all", "task": a.task, "policy_model": optimal, "model_name_or_path": optimal,
                       "problems_dataset": self.data_dir("optimal"),
                       "preference_dataset": self.data_dir("orm-pairs"), "overwrite_dataset": True, "output_dir": out,
                       "seed": a.seed}  # fmt: skip
            self.stage("reward_model", lambda: self.recipe("reward_model.py", a.reward_model_config, options,
                                                           "reward_model"), [out])  # fmt: skip
            specs = [f"best_of_n:n={n},reward_model={out}" for n in a.orm_n]
            self.evaluate(optimal, self.data_dir("backtrack"), self.out / "eval" / "optimal-orm", "eval_orm", specs)

    def pool_problems(self, k: int) -> list[dict[str, Any]]:
        """Round k's pool: the k-th slice of a seeded shuffle of the distinct TRAIN questions (never test ones)."""
        from datasets import load_dataset

        columns = list(self.task.problem_columns)
        train = load_dataset(str(self.data_dir("backtrack")), split="train").select_columns(columns)
        seen, questions = set(), []
        for row in train:
            key = tuple(tuple(row[c]) if isinstance(row[c], list) else row[c] for c in columns)
            if key not in seen:
                seen.add(key)
                questions.append(key)
        random.Random(self.args.seed).shuffle(questions)
        size = self.args.pool_size
        start = ((k - 1) * size) % max(1, len(questions))
        picked = (questions[start:] + questions[:start])[: min(size, len(questions))]
        return [dict(zip(columns, key)) for key in picked]

    def round_datasets(self) -> Path:
        return self.out / "round_datasets"

    def harvest(self, k: int) -> None:
        """``accelerate launch recipes/harvest.py`` (the eval accelerate config: the pool is sharded over its
        processes) on this round's pool, written to ``rounds/round_<k>/pool.jsonl``."""
        from backtrack_trl.study.harvest import write_pool_file

        rdir = self.round_dir(k)
        write_pool_file(self.pool_problems(k), rdir / "pool.jsonl")
        options = {
            "n": self.args.search_n,
            "b": self.args.search_b,
            "temperature": self.args.search_temperature,
            "batch_size": self.args.search_batch_size,
            "max_new_tokens": self.args.search_max_new_tokens,
        }
        if self.args.search_backend != "hf":
            options["backend"] = self.args.search_backend
        overrides = {
            "model_name_or_path": self.round_model(k - 1),
            "pool_file": rdir / "pool.jsonl",
            "test_dataset_name": self.data_dir("backtrack"),
            "output_dir": self.round_datasets(),
            "config_name": f"round_{k}",
            "search": "self_backtracking:" + ",".join(f"{key}={value}" for key, value in options.items()),
            "vllm_server_base_url": self.args.vllm_server_base_url,
            "keep": self.args.keep,
            "seed": self.args.seed + 1000 * k,
            "stats_file": rdir / "harvest.json",
            "task": self.args.task,
            "progress": False,
        }
        server = contextlib.nullcontext(self.args.vllm_server_base_url)
        if self.args.vllm_serve:
            from backtrack_trl.decoding.vllm_backend import launch_vllm_server

            server = launch_vllm_server(
                self.round_model(k - 1),
                python=self.args.vllm_python,
                extra_args=shlex.split(self.args.vllm_server_args),
                env=dict(item.split("=", 1) for item in self.args.vllm_server_env),
                log_file=self.out / "logs" / f"round_{k}_vllm_server.log",
            )
        with server as url:
            overrides["vllm_server_base_url"] = url
            self.recipe("harvest.py", None, overrides, f"round_{k}_search", launch=True)
        if self.args.push_to_hub:
            from backtrack_trl.data.hub_layout import push_hub_dataset

            push_hub_dataset(self.round_datasets(), self.args.hub_dataset_id, config_name=f"round_{k}")

    def run_round(self, k: int) -> None:
        rdir = self.round_dir(k)
        self._forget_if_config_missing(f"round_{k}_search", f"round_{k}")
        self.stage(f"round_{k}_search", lambda: self.harvest(k), [rdir / "harvest.json"])
        overrides = {
            "model_name_or_path": self.round_model(k - 1),
            "dataset_name": self.round_datasets(),
            "dataset_config": f"round_{k}",
            "output_dir": rdir / "model",
            "seed": self.args.seed,
        }
        self.stage(
            f"round_{k}_sft",
            lambda: self.recipe("sft.py", self.args.round_sft_config, overrides, f"round_{k}_sft", launch=True),
            [rdir / "model"],
        )
        self.evaluate(
            rdir / "model", self.data_dir("backtrack"), rdir / "eval", f"round_{k}_eval", self.args.round_eval_decoders
        )

    def control_data(self) -> None:
        from datasets import Dataset, DatasetDict, load_dataset

        from backtrack_trl.data.hub_layout import write_hub_dataset

        kept = load_dataset(str(self.round_datasets()), "round_1", split="train")
        rows = []
        for row in kept.select_columns(list(self.task.problem_columns)):
            problem = self.task.problem_from_row(row)
            rows.append(self.task.optimal_row(problem, self.task.solve(problem)))
        card = {"source": "exact solver (control arm)", "problems": "those kept by round_1", "rows": len(rows)}
        write_hub_dataset(
            DatasetDict({"train": Dataset.from_list(rows)}), self.round_datasets(), card, True, config_name="control_1"
        )
        atomic_write_json(self.out / "rounds" / "control_1" / "harvest.json", {"kept": len(rows)})

    def _forget_if_config_missing(self, stage: str, config_name: str) -> None:
        """Redo a finished stage whose round dataset config is gone (e.g. deleted by hand)."""
        from backtrack_trl.data.hub_layout import dataset_configs

        if self.state.is_done(stage) and config_name not in dataset_configs(self.round_datasets()):
            logger.warning("%s: the config %s is missing from %s; running the stage again", stage, config_name,
                           self.round_datasets())  # fmt: skip
            self.state.forget(stage)

    def run_control(self) -> None:
        cdir = self.out / "rounds" / "control_1"
        self._forget_if_config_missing("control_1_data", "control_1")
        self.stage("control_1_data", self.control_data, [cdir / "harvest.json"])
        overrides = {
            "model_name_or_path": self.round_model(0),
            "dataset_name": self.round_datasets(),
            "dataset_config": "control_1",
            "output_dir": cdir / "model",
            "seed": self.args.seed,
        }
        self.stage(
            "control_1_sft",
            lambda: self.recipe("sft.py", self.args.round_sft_config, overrides, "control_1_sft", launch=True),
            [cdir / "model"],
        )
        self.evaluate(
            cdir / "model", self.data_dir("backtrack"), cdir / "eval", "control_1_eval", self.args.round_eval_decoders
        )

    def report(self) -> Path:
        from backtrack_trl.study.report import write_report
        from backtrack_trl.study.results import collect_decoder_results, collect_round_rows, read_fact_probes

        decoder_results = collect_decoder_results(self.out)
        searches = [spec for spec in self.args.round_eval_decoders if spec != "greedy"]
        round_rows = collect_round_rows(self.out, self.args.rounds, searches[0] if searches else "greedy")
        seconds = {name: info["seconds"] for name, info in self.state.stages.items() if name != "report"}
        settings = "Settings: " + ", ".join(
            f"{k}={v}" for k, v in (("rounds", self.args.rounds), ("pool_size", self.args.pool_size),
                                    ("search", f"b={self.args.search_b}, N={self.args.search_n}"),
                                    ("keep", self.args.keep), ("seed", self.args.seed),
                                    ("threads", thread_setting()))
        )  # fmt: skip
        return write_report(
            self.out / "report",
            decoder_results,
            round_rows,
            seconds,
            settings,
            read_fact_probes(self.out),
            task=self.task,
            study_dir=self.out,  # the search trees of the backtrack model's evaluation
        )

    def run(self) -> Path:
        from backtrack_trl.data.hub_layout import recover_hub_dataset

        for folder in (self.round_datasets(), self.data_dir("backtrack"), self.data_dir("optimal")):
            for action in recover_hub_dataset(folder):  # a kill in the middle of a dataset write
                logger.warning("Recovered an interrupted write in %s: %s", folder, action)
        self.build_data()
        self.init_model()
        self.train()
        self.evaluate_round0()
        self.table1_baselines()
        for k in range(1, self.args.rounds + 1):
            self.run_round(k)
            if k == 1 and self.args.control:
                self.run_control()
        start = time.time()
        report = self.report()
        self.state.mark_done("report", time.time() - start)
        total = sum(info["seconds"] for info in self.state.stages.values())
        atomic_write_json(self.out / "timings.json", {n: i["seconds"] for n, i in self.state.stages.items()})
        print(f"\nStudy finished: {report} (stage time in total {total:.0f}s)", flush=True)
        print(report.read_text(), flush=True)
        return report


def main(args: SelfImproveArguments, recipes_dir: str | os.PathLike | None = None) -> Path:
    """Run the study of ``args``; ``recipes_dir`` is the sub-recipes' folder when ``args.recipes_dir`` is None
    (``recipes/self_improve.py`` passes its own folder)."""
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    # SIGTERM unwinds like Ctrl-C, so the running stage is stopped and the lock released on the way out.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        study = Study(args, recipes_dir=recipes_dir)
        try:
            return study.run()
        finally:
            study.close()
    except (StageFailedError, EmptyHarvestError, ValueError, FileNotFoundError, StudyLockedError) as error:
        # One readable message instead of a traceback: the failing recipe's own traceback was streamed above.
        print(f"\nerror: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume from the last finished stage.", file=sys.stderr)
        raise SystemExit(130) from None


def _exit_on_sigterm(signum, _frame):
    raise SystemExit(128 + signum)
