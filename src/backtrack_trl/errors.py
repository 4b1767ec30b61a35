"""How the recipes end on a user error: one line ``error: <what is wrong and the fix>`` on stderr, exit code 1.

Every check in this package raises ``ValueError`` / ``FileNotFoundError`` / ``FileExistsError`` with a message that
names the option and the fix; a traceback in front of it only hides it. Other exceptions are bugs and keep their
traceback, and ``BACKTRACK_TRL_TRACEBACK=1`` shows it for user errors too.

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

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any


USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)


def run_recipe(
    main: Callable[[], Any],
    user_errors: tuple[type[BaseException], ...] = USER_ERRORS,
    lead: str = "",
    interrupted: str = "interrupted",
) -> Any:
    """Call ``main()``; print a user error (one of ``user_errors``) as one line and exit 1; Ctrl-C: exit 130 with
    the note ``interrupted``. ``lead`` goes before either line (the study: a blank line after the streamed
    output)."""
    try:
        return main()
    except user_errors as error:
        if os.environ.get("BACKTRACK_TRL_TRACEBACK", "0") not in ("", "0"):
            raise
        print(f"{lead}error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"{lead}{interrupted}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def run_options_recipe(options_class: type, job: Callable[[Any], Any]) -> Any:
    """The whole entry point of a recipe with one options dataclass: parse ``--config`` and the command line with
    ``TrlParser`` (``--help`` lists the options), then ``job(options)`` under :func:`run_recipe`."""

    def main():
        from trl import TrlParser

        (options,) = TrlParser((options_class,)).parse_args_and_config()
        return job(options)

    return run_recipe(main)


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
