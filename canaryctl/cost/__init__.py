"""Cost: what drives the bill (`canaryctl cost report`: counts.py, report.py, sources.py) and
the cheapest routing that meets each tier's floor (`canaryctl cost optimize`: optimize.py)."""
