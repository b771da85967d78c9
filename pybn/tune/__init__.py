"""Hyperparameter search the way the practice teaches it: random values on
the right scale (never a grid), coarse to fine, one model babysat ("panda")
or many in parallel ("caviar"), every trial stored so nothing is lost."""
from .pruners import MedianPruner, NopPruner, PercentilePruner, SuccessiveHalvingPruner
from .samplers import CoarseToFineSampler, RandomSampler
from .spaces import Choice, Distribution, IntUniform, LogUniform, OneMinusLogUniform, Uniform
from .storage import SQLiteStorage
from .study import (RetestResult, Study, StudyInterrupted, StudyMismatch, Trial, TrialContext,
                    TrialDiverged, TrialPruned, get_all_study_names)

__all__ = ["MedianPruner", "NopPruner", "PercentilePruner", "SuccessiveHalvingPruner", "CoarseToFineSampler", "RandomSampler", "Choice", "Distribution", "IntUniform", "LogUniform", "OneMinusLogUniform", "Uniform",
           "SQLiteStorage", "RetestResult", "Study", "StudyInterrupted", "StudyMismatch", "Trial",
           "TrialContext", "TrialDiverged", "TrialPruned", "get_all_study_names"]
