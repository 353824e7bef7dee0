"""Indicators: the indicator frame of one market and day, with its checks (assets, definitions)."""
