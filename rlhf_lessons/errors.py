"""The course's own error types: a user mistake the message can explain, as distinct from a bug.

`rlhf-lessons` turns a `CourseError` into one line on stderr and exit code 2 (`cli.main`); anything else is a bug
and keeps its traceback. Each type is also a `ValueError`, so code that catches bad input as `ValueError` keeps
working.
"""

from __future__ import annotations


class CourseError(ValueError):
    """Bad input or a bad state the user can fix; the message says what happened and what to do."""


class ConfigError(CourseError):
    """A setting out of range or not a finite number."""


class CheckpointError(CourseError):
    """A model folder that is missing, damaged, or not the kind of model that was asked for."""


class TrainingDiverged(CourseError):
    """A loss or gradient became NaN or infinite; nothing was saved over the last good checkpoint."""


class WorkspaceError(CourseError):
    """The workspace or the label store cannot be read or written (permissions, a lock, a wrong path)."""


class CheckpointMissing(CheckpointError, FileNotFoundError):
    """No checkpoint where one was asked for; also a FileNotFoundError, as a missing file always was."""
