"""The study: its configuration, folder layout, resumable stages, harvest, results and report."""
