"""Test-suite set-up: offline Hub (nothing is downloaded; set before any Hugging Face import reads it)."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
