"""How the recipes end on a user error: one line ``error: <what is wrong and the fix>`` on stderr, exit code 1 (2 for a
command line the parser refuses, argparse's convention).

Every check in this package raises ``ValueError`` / ``FileNotFoundError`` / ``FileExistsError`` /
``NotADirectoryError``, or one of the :class:`UserError` s below where the failure is met (a vLLM server that does not
answer, vLLM not installed, a search that kept nothing), with a message that names the option and the fix; a
traceback in front of it only hides it. Other exceptions are bugs and keep their traceback, and
``BACKTRACK_TRL_TRACEBACK=1`` shows it for user errors too. :func:`recipe_parser` is the recipes' ``TrlParser``
whose command-line errors are one line with the closest valid choice or option instead of a 150-line usage dump.

Usage (a recipe's entry point):

```python
from backtrack_trl.errors import run_recipe


def main():
    ...


if __name__ == "__main__":
    run_recipe(main)
```
"""

from __future__ import annotations

import argparse
import difflib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


class UserError(Exception):
    """A failure the user fixes (start a server, install a package, search wider) rather than a bug: raised where it
    is met, with a message naming the option and the fix; :func:`run_recipe` prints it as one line."""


class ServerUnavailableError(UserError, ConnectionError):
    """A server the options name does not answer (say how to start it)."""


class MissingDependencyError(UserError, ImportError):
    """An optional package is not installed in this environment (say which environment has it)."""


class IsAFolderError(UserError, IsADirectoryError):
    """A folder where the option wants a file (:func:`check_file`)."""


class UsageError(ValueError):
    """A command line the recipe's parser refuses (unknown option, invalid choice, bad value): exit code 2."""

    exit_code = 2


USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, UserError)


def run_recipe(
    main: Callable[[], Any],
    user_errors: tuple[type[BaseException], ...] = USER_ERRORS,
    lead: str = "",
    interrupted: str = "interrupted",
) -> Any:
    """Call ``main()``; print a user error (one of ``user_errors``) as one line and exit 1 (a :class:`UsageError`:
    2); Ctrl-C: exit 130 with the note ``interrupted``. ``lead`` goes before either line (the study: a blank line
    after the streamed output)."""
    try:
        return main()
    except user_errors as error:
        if os.environ.get("BACKTRACK_TRL_TRACEBACK", "0") not in ("", "0"):
            raise
        print(f"{lead}error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(getattr(error, "exit_code", 1)) from None
    except KeyboardInterrupt:
        print(f"{lead}{interrupted}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def run_options_recipe(options_class: type, job: Callable[[Any], Any]) -> Any:
    """The whole entry point of a recipe with one options dataclass: parse ``--config`` and the command line with
    :func:`recipe_parser` (``--help`` lists the options), then ``job(options)`` under :func:`run_recipe`."""

    def main():
        (options,) = recipe_parser((options_class,)).parse_args_and_config()
        return job(options)

    return run_recipe(main)


def check_file(path: str | os.PathLike, option: str, fix: str = "") -> Path:
    """``path`` as a Path when it is a file; else one error naming ``option``, the value and ``fix``: a folder is an
    :class:`IsAFolderError` (a ``open()`` on it would raise a bare IsADirectoryError), a missing path a
    FileNotFoundError."""
    path = Path(path)
    if path.is_dir():
        raise IsAFolderError(f"{option} {str(path)!r} is a folder, not a file{': ' + fix if fix else '.'}")
    if not path.is_file():
        raise FileNotFoundError(f"{option} {str(path)!r} does not exist{': ' + fix if fix else '.'}")
    return path


def closest(value: Any, candidates: Iterable[Any]) -> str | None:
    """The candidate ``value`` most likely meant (same spelling up to case, else difflib's closest), or None."""
    names = [str(c) for c in candidates]
    text = str(value)
    same_case = [name for name in names if name.lower() == text.lower()]
    if same_case:
        return same_case[0]
    matches = difflib.get_close_matches(text, names, n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(value: Any, candidates: Iterable[Any]) -> str:
    """`` (did you mean 'b'?)`` when a candidate is close to ``value``, else nothing."""
    guess = closest(value, candidates)
    return f" (did you mean {guess!r}?)" if guess is not None else ""


def invalid_choice(option: str, value: Any, choices: Iterable[Any]) -> str:
    """``--stage: invalid choice 'trian'; choose from 'data', 'train', 'all' (did you mean 'train'?)``."""
    choices = list(choices)
    hint = did_you_mean(value, choices)
    return f"{option}: invalid choice {str(value)!r}; choose from {', '.join(repr(str(c)) for c in choices)}{hint}"


class _OneLineErrors:
    """Mixed into ``HfArgumentParser`` / ``TrlParser``: every command-line error is a :class:`UsageError` with one
    line (argparse would print the whole usage, 150 lines for a trainer recipe, and exit), naming the option, the
    value and the closest valid choice or option."""

    _refuse_unknown = False

    def _option_name(self, action) -> str:
        return action.option_strings[0] if action.option_strings else action.dest

    def error(self, message):
        # argparse: "argument --max_problems/--max-problems: expected one argument" -> "--max_problems: ..."
        raise UsageError(re.sub(r"^argument (-[^/:]+)(/[^:]*)?:", r"\1:", message))

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            raise UsageError(invalid_choice(self._option_name(action), value, action.choices))

    def _known_options(self) -> list[str]:
        return [option for action in self._actions for option in action.option_strings if option.startswith("--")]

    def unknown_option_message(self, unknown: Sequence[str], where: str = "") -> str:
        flags = [item.split("=", 1)[0] for item in unknown if item.startswith("-")]
        if not flags:
            return f"{where}unexpected argument(s) {list(unknown)}: every value follows its --option (see --help)."
        guess = closest(flags[0], self._known_options())
        hint = f"did you mean {guess}? " if guess else ""
        return f"{where}unknown option {flags[0]}: {hint}List the options with --help."

    def parse_known_args(self, args=None, namespace=None):
        namespace, unknown = super().parse_known_args(args=args, namespace=namespace)
        if self._refuse_unknown and unknown:
            raise UsageError(self.unknown_option_message(unknown))
        return namespace, unknown

    def parse_args_into_dataclasses(self, args=None, return_remaining_strings=False, *more, **kwargs):
        # An unknown flag is refused while parsing, before the dataclasses run their own checks.
        self._refuse_unknown = not return_remaining_strings
        try:
            return super().parse_args_into_dataclasses(args, return_remaining_strings, *more, **kwargs)
        finally:
            self._refuse_unknown = False

    def parse_args_and_config(self, args=None, return_remaining_strings=False, fail_with_unknown_args=True, **kwargs):
        """``TrlParser.parse_args_and_config`` with the ``--config`` YAML checked first: a missing file or a folder,
        an unknown key (with the closest option) and a value outside an option's choices are one clear error."""
        from backtrack_trl.config_files import read_yaml

        args = list(sys.argv[1:] if args is None else args)
        if "--config" in args:
            index = args.index("--config")
            if index + 1 >= len(args):
                raise UsageError("--config: expected a YAML file after it.")
            path = args[index + 1]
            config = read_yaml(path, option="--config")
            where = f"--config {path!r}: "
            actions = {action.dest: action for action in self._actions}
            unknown = [key for key in config if key != "env" and key not in actions]
            if unknown and fail_with_unknown_args and not return_remaining_strings:
                guess = closest(unknown[0], [dest for dest in actions if dest != "help"])
                hint = f"did you mean {guess!r}? " if guess else ""
                raise ValueError(f"{where}unknown key {unknown[0]!r}: {hint}List the options with --help.")
            for key, value in config.items():
                action = actions.get(key)
                if action is None or action.choices is None:
                    continue
                for item in value if isinstance(value, list) else [value]:
                    if item not in action.choices and str(item) not in map(str, action.choices):
                        raise ValueError(where + invalid_choice(key, item, action.choices))
        return super().parse_args_and_config(
            args, return_remaining_strings=return_remaining_strings, fail_with_unknown_args=fail_with_unknown_args,
            **kwargs,
        )  # fmt: skip


@functools.cache
def _parser_class(base: type) -> type:
    return type(f"Recipe{base.__name__}", (_OneLineErrors, base), {"__doc__": _OneLineErrors.__doc__})


def recipe_parser(dataclass_types, with_config: bool = True, **kwargs) -> argparse.ArgumentParser:
    """A ``trl.TrlParser`` (``with_config=False``: a ``transformers.HfArgumentParser``, for options that use the name
    ``config`` themselves) whose errors are one line: ``--method: invalid choice 'DPO'; choose from 'dpo', 'kto'
    (did you mean 'dpo'?)`` or ``unknown option --lerning_rate: did you mean --learning_rate?``, raised as a
    :class:`UsageError` (exit code 2 under :func:`run_recipe`). Choices stay case-sensitive: a value is written
    into configs, model cards and reports under one spelling."""
    if with_config:
        from trl import TrlParser as base
    else:
        from transformers import HfArgumentParser as base
    return _parser_class(base)(dataclass_types, **kwargs)


def recipe_option(argv: Sequence[str], name: str) -> str | None:
    """The value a recipe's command line gives ``name`` before parsing: ``--name value`` / ``--name=value`` (the last
    wins), else the ``name:`` key of its ``--config`` YAML, else None. Recipes whose dataclasses depend on one option
    (the task's generator options, DPO vs KTO) read it first with this."""
    from backtrack_trl.config_files import read_yaml

    def flag(key: str) -> str | None:
        value = None
        for index, item in enumerate(argv):
            if item == f"--{key}" and index + 1 < len(argv):
                value = argv[index + 1]
            elif item.startswith(f"--{key}="):
                value = item.split("=", 1)[1]
        return value

    value, config = flag(name), flag("config")
    if value is None and config:
        value = read_yaml(config, option="--config").get(name)
    return None if value is None else str(value)
