"""conf/ installed as the package `curator_conf`: read it with importlib.resources (paths.py)."""
