"""User errors of the command line: one ``error:`` line each, the traceback only with --debug."""

import argparse
import sys
import warnings
from contextlib import contextmanager

from skretrieval.persistence import FileFormatError

# What a plain OS error asks the user to do, by its type (most specific first).
_OS_FIXES = (
    (FileNotFoundError, "check the path"),
    (IsADirectoryError, "give a file, not a folder"),
    (NotADirectoryError, "give a folder, not a file"),
    (PermissionError, "check the permissions, or choose another location"),
    (OSError, "check the file system (free space, permissions, paths)"),
)


class CommandError(Exception):
    """A user error of a subcommand: what is wrong, and the fix."""

    def __init__(self, what, fix):
        super().__init__(f"{what} -- {fix}")
        self.what = what
        self.fix = fix


# Errors that the library raises on bad input, with messages written for users. Anything else
# is a bug and keeps its traceback.
USER_ERRORS = (CommandError, OSError, FileFormatError, ValueError, TypeError, RuntimeError)


def _one_line(text):
    return " ".join(str(text).split())


def error_line(exc):
    """The ``error: ...`` line of a user error."""
    if isinstance(exc, CommandError):
        return f"error: {_one_line(exc)}"
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        # Raised by the operating system: "[Errno 13] Permission denied: 'x'" says no fix.
        fix = next(fix for kind, fix in _OS_FIXES if isinstance(exc, kind))
        return f"error: {exc.filename}: {exc.strerror.lower()} -- {fix}"
    message = _one_line(exc) or type(exc).__name__
    if isinstance(exc, (RuntimeError, TypeError)):
        message += " (--debug shows the traceback)"
    return f"error: {message}"


def positive_int(text):
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one ``error:`` line."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {_one_line(message)} -- see '{self.prog} --help'\n")


def _print_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {_one_line(message)}", file=sys.stderr)


@contextmanager
def warnings_as_lines():
    """Show warnings as ``warning: ...`` lines on stderr, without the source line."""
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        yield
