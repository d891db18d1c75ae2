"""Collection for the whole tree: modules of an optional extra that is not installed are not
imported for their doctests (spela_stream.flower needs the fleet extra, flwr)."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("flwr") else ["spela_stream/flower.py"]
