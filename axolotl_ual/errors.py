"""The errors this package raises on purpose, and the exit codes of its commands.

Every message is written for the user: it names the file or dataset, the row, the field or key,
and the value, and says what to do. Three kinds, one base:

- `DataError`: data that cannot be used (a row, a value, a file's contents or path).
- `UsageError`: arguments or settings that do not go together (command-line flags, `ual_*` keys).
- `BackendError`: a judge or teacher backend problem that no retry fixes (bad key, unknown
  model, server unreachable, missing package).

`DataError` and `UsageError` are `ValueError`s, so pydantic reports them as validation errors
of the config; `BackendError` is a `RuntimeError`. No imports beyond the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum


class UALError(Exception):
    """Base of every error axolotl-ual raises deliberately."""


class DataError(UALError, ValueError):
    """Data the command or the training run cannot use; the message says what and where."""


class UsageError(UALError, ValueError):
    """Arguments or settings that do not go together."""


class BackendError(UALError, RuntimeError):
    """A problem with the judge / teacher backend that no retry can fix: stops the run."""


class ExitCode(IntEnum):
    """Exit status of the `axolotl-ual` commands."""

    OK = 0  # everything done
    INCOMPLETE = 1  # done, but some rows have no result (null); everything else is written
    USAGE = 2  # bad arguments or unreadable input: nothing was sent or written
    STOPPED = 3  # the backend stopped the run (bad key, unknown model, server down)
    INTERRUPTED = 130  # Ctrl-C / SIGTERM, after writing what was finished


def exit_status_help(meanings: Mapping[ExitCode, str]) -> str:
    """The "Exit status:" lines of a command's --help, one per code it uses."""
    return "Exit status:\n" + "".join(
        f"  {int(code):<4} {meaning}\n" for code, meaning in meanings.items()
    )
