"""The steps the CLI (and later the line) share: train a station's model, evaluate it, inspect files."""
