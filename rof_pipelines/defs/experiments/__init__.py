"""Experiments: the A/B report and the strategy knowledge it feeds (assets, definitions)."""
