"""Detectors: the built-in ones are registered here by import path (imported when first asked for).

Adding a detector: one module with a `Detector` subclass and its `Settings`, plus one line below.
"""

from cellsight.detectors.registry import register_path

BUILTIN = {
    "classical": "cellsight.detectors.classical:Classical",
    "rules": "cellsight.detectors.rules:Rules",
    "patchcore": "cellsight.detectors.patchcore:PatchCore",
    "supervised": "cellsight.detectors.supervised.detector:Supervised",
    "ensemble": "cellsight.detectors.supervised.ensemble:SupervisedEnsemble",
    "hybrid": "cellsight.detectors.hybrid:Hybrid",
    "simplenet": "cellsight.detectors.simplenet:SimpleNet",
}
for _name, _path in BUILTIN.items():
    register_path(_name, _path)
