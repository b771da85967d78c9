"""Hyperparameter search the way the practice teaches it: random values on
the right scale (never a grid), coarse to fine, one model babysat ("panda")
or many in parallel ("caviar"), every trial stored so nothing is lost."""
from .spaces import Choice, Distribution, IntUniform, LogUniform, OneMinusLogUniform, Uniform
from .storage import SQLiteStorage
from .study import (RetestResult, Study, StudyInterrupted, StudyMismatch, Trial, TrialContext,
                    TrialDiverged, TrialPruned, get_all_study_names)

__all__ = ["Choice", "Distribution", "IntUniform", "LogUniform", "OneMinusLogUniform", "Uniform",
           "SQLiteStorage", "RetestResult", "Study", "StudyInterrupted", "StudyMismatch", "Trial",
           "TrialContext", "TrialDiverged", "TrialPruned", "get_all_study_names"]
