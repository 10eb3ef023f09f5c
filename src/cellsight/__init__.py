"""cellsight: deep-learning visual inspection for battery and solar-cell production lines."""

__version__ = "0.1.0"
