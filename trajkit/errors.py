"""User-facing errors.

Every error a user can trigger is a :class:`TrajkitError` whose message is one line naming the file,
array or field at fault and what to do about it. The CLI prints that line (no traceback unless
``--debug``) and exits non-zero.
"""

from __future__ import annotations


class TrajkitError(Exception):
    """A failure caused by the user's input, reported as one line with the fix."""

    exit_code = 1


class ArchiveError(TrajkitError):
    """An archive is missing, malformed, of an unknown version, or used wrongly."""


class MetadataError(ArchiveError):
    """Archive metadata fails the JSON schema; ``pointers`` lists the failing JSON pointers."""

    def __init__(self, where: str, problems: list[tuple[str, str]]):
        self.pointers = [p for p, _ in problems]
        detail = "; ".join(f"{p or '/'}: {m}" for p, m in problems)
        super().__init__(f"{where}: invalid metadata at {detail}")


class LockedError(ArchiveError):
    """Another writer holds the archive's lock."""


class ConfigError(TrajkitError):
    """An experiment configuration is invalid."""


class AnalysisError(TrajkitError):
    """An analysis cannot run on the given input or parameters."""


class PluginError(TrajkitError):
    """A plugin failed to load or raised while computing."""


class DeviceError(TrajkitError):
    """A device was asked for that this machine does not have (or is not a device name)."""


class ClusterError(TrajkitError):
    """A Dask scheduler or worker cannot be used: no answer, no workers, another trajkit, unreadable input."""


class PluginWarning(UserWarning):
    """A plugin failed to load; the rest of trajkit goes on without it."""
