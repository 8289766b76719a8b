"""One family of project exceptions; messages name the file and say what is wrong."""

__all__ = ["PCError", "InputError", "OutputExistsError", "TelemetryError", "TelescopeMotion"]


class PCError(Exception):
    """Base class of every error pc_gpu raises on purpose."""


class InputError(PCError):
    """A file or argument the user gave cannot be used.

    Parameters
    ----------
    path : str or None
        The offending file (or None for a bad argument).
    problem : str
        What is wrong and, where possible, what to do.
    """

    def __init__(self, path, problem):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class OutputExistsError(PCError):
    """An output file exists and overwriting was not asked for."""


class TelemetryError(PCError):
    """Telemetry could not be delivered (the frame's files are still written)."""


class TelescopeMotion(PCError):
    """The frame's ZPFLAG says the telescope moved during the exposure."""
