"""The embedded order simulator: a seeded, realistic repair history with its ground truth.

Pure code (numpy/pandas in, DataFrames out; no file I/O): ``pipelines.generate`` is the thin
stage that writes the tables. See :class:`SimulationConfig` for every knob.
"""

from .config import SeasonBump, SimulationConfig
from .engine import SimulationResult, simulate

__all__ = ["SeasonBump", "SimulationConfig", "SimulationResult", "simulate"]
