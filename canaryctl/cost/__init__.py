"""Cost: what drives the bill (`canaryctl cost report`: counts.py, report.py, sources.py)."""
