"""Procedural images of lithium-ion line stations, with pixel masks, defect classes and cell IDs.

Real defect images are rare and owned by plants; these stand in for them in tests, demos and
detector development. Each image is a pure function of (station, cell ID, seed, defect class, size)
(`render.py`); `writer.py` writes a station's set in the MVTec AD layout.
"""

from cellsight.data.cellcode import make_cell_id
from cellsight.data.synth.render import STATIONS, SynthCell, check_station, render_cell
from cellsight.data.synth.writer import write_station_dataset

__all__ = ["STATIONS", "SynthCell", "check_station", "make_cell_id", "render_cell", "write_station_dataset"]
