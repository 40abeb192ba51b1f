"""Exceptions raised by raypipe: the whole tree, in one place.

Every error a user can cause derives from :class:`RaypipeError`, so callers can
catch one class. The CLI prints ``str(err)`` as one line and exits with
``err.exit_code``; ``err.context`` holds the structured details (file, column, key).

    RaypipeError (1)
    ├── ConfigError (2)      bad YAML, unknown key, bad --set, invalid value
    ├── DataError (3)        missing/corrupt/empty data, filters matching nothing
    │   └── SchemaError (3)  columns or types disagree with the contract
    ├── TrainingError (4)    the fit failed or produced no model
    ├── RegistryError (5)    MLflow logging, registration or model loading failed
    ├── ServingError (6)     Serve deployment or the smoke request failed
    ├── BusyError (7)        another run holds the work folder's lock
    ├── ExplainError (1)     explanations asked of a model that has none (scikit-learn)
    └── SubmitError (1)      a Ray Job could not be submitted or followed
"""

from __future__ import annotations


class RaypipeError(Exception):
    """Base class. ``exit_code`` is what the CLI returns for it."""

    exit_code = 1

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __reduce__(self):  # survive pickling across Ray processes with context
        return (_rebuild, (type(self), self.message, self.context))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[RaypipeError], message: str, context: dict) -> RaypipeError:
    return cls(message, **context)


class ConfigError(RaypipeError):
    exit_code = 2


class DataError(RaypipeError):
    exit_code = 3


class SchemaError(DataError):
    exit_code = 3


class TrainingError(RaypipeError):
    exit_code = 4


class RegistryError(RaypipeError):
    exit_code = 5


class ServingError(RaypipeError):
    exit_code = 6


class BusyError(RaypipeError):
    """Another raypipe run is using the same work folder."""

    exit_code = 7


class ExplainError(RaypipeError):
    """Explanations were asked of a model that cannot give them (a scikit-learn estimator)."""


class SubmitError(RaypipeError):
    """The Ray Job could not be submitted or followed."""

    exit_code = 1
