"""The one base class of errors a user can fix (a config key, a data file, a run folder, a model path).

The command-line tools print these as one line and exit with status 2; any other exception is a bug in
our code and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: the message says what is wrong, where (key, file:line or path), and what is allowed."""


EXIT_USER_ERROR = 2
