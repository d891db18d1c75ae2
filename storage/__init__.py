"""The SQLite checkpoint store (built on sqlite-utils): runs, checkpoints, tensors, history.

It stores what the learning core hands it and rebuilds nothing but numpy arrays and JSON
values; no pickle, so ``sqlite3 runs.db`` can read every checkpoint.
"""

from storage.records import Checkpoint, CheckpointInfo, RunInfo
from storage.schema import SCHEMA
from storage.store import CheckpointStore

__all__ = ["SCHEMA", "Checkpoint", "CheckpointInfo", "CheckpointStore", "RunInfo"]
