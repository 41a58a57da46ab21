"""Callbacks that show a run (prediction grids of held-out samples, where a training step's time goes, a depth
prediction gone flat), that record it (the held-out split), and that make it stop and resume cleanly.

``PredictionGrid``, ``Timings``, ``FlatDepthWarning``, ``Curves``, ``LearningRates`` and ``TrainingProgress`` are
configured in ``conf/callbacks/``; ``CleanExit``, ``RngState`` and ``SplitFile`` are always on: the task functions
add them.
"""

from fgbg.training.callbacks.curves import Curves, LearningRates
from fgbg.training.callbacks.exits import CleanExit, RngState
from fgbg.training.callbacks.flat_depth import FlatDepthWarning
from fgbg.training.callbacks.grids import PredictionGrid, prediction_grid
from fgbg.training.callbacks.progress import TrainingProgress
from fgbg.training.callbacks.split import SplitFile
from fgbg.training.callbacks.timings import Timings

__all__ = [
    "CleanExit",
    "Curves",
    "FlatDepthWarning",
    "LearningRates",
    "PredictionGrid",
    "RngState",
    "SplitFile",
    "Timings",
    "TrainingProgress",
    "prediction_grid",
]
