"""One module per data format: each turns `Row`s (formats/rows.py: read from a file or the hub, numbered so
every error names file:line) into the project's record types. `data/loaders.py` picks the format for a config."""
