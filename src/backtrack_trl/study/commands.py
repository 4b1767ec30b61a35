"""The sub-recipe commands a study's stages run: found in ``--recipes_dir``, launched with ``accelerate launch`` where
they train or decode, streamed to the console and to the stage's log, stopped with the study.

Usage:

```python
from pathlib import Path

from backtrack_trl.study.commands import RecipeLauncher, find_recipes_dir

launcher = RecipeLauncher(find_recipes_dir(None), accelerate_config="accelerate_configs/cpu.yaml")
print(launcher.command("sft.py", "recipes/countdown-tiny/sft/config_backtrack.yaml", {"seed": 1}, launch=True))
launcher.run("build_dataset.py", "recipes/countdown-tiny/data/config_optimal.yaml",
             {"output_dir": "data/demo", "overwrite": True}, Path("logs/data_demo.log"))
```
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from backtrack_trl.study.stage_guard import GRACE_SECONDS, guarded


logger = logging.getLogger(__name__)

#: The sub-recipes the stages run, looked up in ``--recipes_dir``.
RECIPE_SCRIPTS = ("build_dataset.py", "init_model.py", "sft.py", "evaluate_decoders.py", "harvest.py")
#: The sub-recipes that decode: launched with the evaluation's accelerate config when one is given.
DECODING_SCRIPTS = ("evaluate_decoders.py", "harvest.py")


class StageFailedError(RuntimeError):
    """A sub-recipe exited with an error (its output was streamed above and saved in the stage log)."""


def cli_args(overrides: dict[str, Any]) -> list[str]:
    """``--key value`` for every override that is not None (a list gives ``--key v1 v2 ...``)."""
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


def needed_scripts(args) -> list[str]:
    """The sub-recipes a study with the options ``args`` (``SelfImproveArguments``) runs."""
    init_model = bool(args.init_model_config and not args.backtrack_model)
    needed = [script for script in RECIPE_SCRIPTS if script != "init_model.py" or init_model]
    if args.dpo_config or args.kto_config:
        needed += ["build_preference_dataset.py", "preference.py"]
    if args.reward_model_config:
        needed.append("reward_model.py")
    if args.grpo_config or args.round_trainer == "grpo":
        needed.append("grpo.py")
    return needed


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


class RecipeLauncher:
    """Builds and runs the command of a sub-recipe in ``recipes``: ``python recipe.py --config C --key value ...``,
    under ``accelerate launch`` (``accelerate_config``; ``eval_accelerate_config`` for the decoding recipes;
    ``num_processes`` when given) for the recipes that train or decode. ``lock_fds`` stay open in every command
    (the study's lock)."""

    def __init__(
        self,
        recipes: Path,
        accelerate_config: str,
        eval_accelerate_config: str | None = None,
        num_processes: int | None = None,
        python: str = sys.executable,
        lock_fds: tuple[int, ...] = (),
    ):
        self.recipes, self.python, self.lock_fds = Path(recipes), python, lock_fds
        self.accelerate_config, self.eval_accelerate_config = accelerate_config, eval_accelerate_config
        self.num_processes = num_processes

    @classmethod
    def from_args(
        cls, args, recipes: Path, python: str = sys.executable, lock_fds: tuple[int, ...] = ()
    ) -> RecipeLauncher:
        """The launcher of a study with the options ``args`` (``SelfImproveArguments``)."""
        return cls(recipes, args.accelerate_config, args.eval_accelerate_config, args.num_processes, python, lock_fds)

    def command(self, script: str, config: str | None, overrides: dict[str, Any], launch: bool = False) -> list[str]:
        cmd = [self.python]
        if launch:
            accelerate_config = self.accelerate_config
            if script in DECODING_SCRIPTS and self.eval_accelerate_config:
                accelerate_config = self.eval_accelerate_config
            # --quiet: a failing recipe's own one-line error is the message, not accelerate's CalledProcessError.
            cmd += ["-m", "accelerate.commands.launch", "--quiet", "--config_file", accelerate_config]
            if self.num_processes is not None:
                cmd += ["--num_processes", str(self.num_processes)]
        return [*cmd, str(self.recipes / script), *(["--config", config] if config else []), *cli_args(overrides)]

    def run(
        self, script: str, config: str | None, overrides: dict[str, Any], log_file: Path, launch: bool = False
    ) -> None:
        """Run the command, its output streamed to the console and to ``log_file``; raise StageFailedError if it
        fails."""
        run_logged(self.command(script, config, overrides, launch), log_file, self.lock_fds)
