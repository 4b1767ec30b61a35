"""Datasets: the task's SFT rows and test splits, preference pairs, and the Hub folder layout."""
