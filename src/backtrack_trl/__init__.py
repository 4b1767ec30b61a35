"""backtrack-trl: Self-Backtracking (arXiv 2502.04404) on the Hugging Face stack."""

__version__ = "0.1.0.dev0"
