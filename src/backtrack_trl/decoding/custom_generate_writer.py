"""Ship the search with a model folder: ``write_custom_generate(output_dir)`` adds ``custom_generate/``.

After it, ``AutoModelForCausalLM.from_pretrained(output_dir, trust_remote_code=True).generate(...)`` runs the
self-backtracking search (see ``custom_generate/generate.py``); without ``trust_remote_code`` the folder loads and
generates as usual. ``push_to_hub`` / ``upload_folder`` upload the folder as is.

Usage:

```python
from backtrack_trl.decoding import write_custom_generate

trainer.save_model(output_dir)
write_custom_generate(output_dir)
```
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


TEMPLATE = Path(__file__).parent / "custom_generate" / "generate.py"
REQUIREMENTS = "backtrack-trl\n"


def write_custom_generate(output_dir: str | os.PathLike) -> Path:
    """Write ``<output_dir>/custom_generate/{generate.py,requirements.txt}`` atomically; returns the folder."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise FileNotFoundError(f"{output_dir} is not a folder: save the model there first.")
    target = output_dir / "custom_generate"
    staging = Path(tempfile.mkdtemp(prefix=".custom_generate-", dir=output_dir))
    try:
        shutil.copyfile(TEMPLATE, staging / "generate.py")
        (staging / "requirements.txt").write_text(REQUIREMENTS)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target
