"""The spela-stream command line (typer), thin over the library."""
