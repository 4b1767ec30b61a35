"""Hugging Face Space entry point of the search demo (backtrack_trl.viz.demo).

The Space holds this file, ``requirements.txt``, the package's ``src/`` and a model folder ``model/`` (the README of
the repository, "Seeing the search", has the upload commands). Locally, from the repository root:

    GRADIO_ANALYTICS_ENABLED=False DEMO_MODEL=results/countdown-tiny/models/backtrack-sft python space/app.py
"""

import os
import sys
from pathlib import Path


HERE = Path(__file__).resolve().parent
for src in (HERE / "src", HERE.parent / "src"):  # the Space's copy of the package, else the repository's
    if (src / "backtrack_trl").is_dir():
        sys.path.insert(0, str(src))
        break
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from backtrack_trl.viz.demo import build_demo  # noqa: E402


demo = build_demo(os.environ.get("DEMO_MODEL", str(HERE / "model")), data=os.environ.get("DEMO_DATA"))

if __name__ == "__main__":
    demo.launch(server_name=os.environ.get("DEMO_HOST", "0.0.0.0"))
