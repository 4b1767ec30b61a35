"""Seeing the search: the search tree (HTML / PNG) and the Gradio demo."""
