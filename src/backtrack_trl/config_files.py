"""Read a recipe's YAML config: the one place a YAML file becomes a dict, with errors that name the option.

Usage:

```python
from backtrack_trl.config_files import read_yaml

config = read_yaml("recipes/countdown-tiny/sft/config_backtrack.yaml", option="--config")
print(config["learning_rate"])
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def read_yaml(path: str | os.PathLike, option: str = "--config") -> dict[str, Any]:
    """The mapping in the YAML file ``path``; ``option`` names where the path came from in every error."""
    import yaml

    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a YAML file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{option} {str(path)!r} {what} (check the path).")
    with open(path, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            # One line: PyYAML's own message spans several ("while parsing ... in <file>, line 1 ...").
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or " ".join(str(error).split())
            raise ValueError(f"{option} {str(path)!r} is not valid YAML{where}: {problem}; fix the file.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{option} {str(path)!r} must be a YAML mapping of option: value.")
    return data
