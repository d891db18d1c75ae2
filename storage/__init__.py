"""The SQLite checkpoint store (built on sqlite-utils); filled in by the streaming-CLI work."""
