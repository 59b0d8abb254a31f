"""`autoal-dist tune`: the sweep file (`space.py`) and its Ray Tune runner (`runner.py`)."""
