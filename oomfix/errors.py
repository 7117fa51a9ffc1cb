"""One error hierarchy; `exit_code_for` is the only place that turns errors into exit codes."""
from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1  # a documented "something to act on": check findings, apply with no rung left
EXIT_ERROR = 2  # usage or input error: one line on stderr, nothing written
EXIT_INTERRUPTED = 130


class OomfixError(Exception):
    """An expected failure: printed as one line, never as a traceback."""

    exit_code = EXIT_ERROR


class UsageError(OomfixError):
    """The command line asks for something that cannot be done."""


class InputError(OomfixError):
    """A log, config or launcher cannot be read or is not what it claims to be."""


class ConfigError(InputError):
    """A config cannot be parsed, located or edited safely."""


class RuleError(OomfixError):
    """A rule file breaks the schema, or a rule cannot run."""


class EditRefused(ConfigError):
    """The editor will not make an edit because it cannot make it surgically."""


class JournalError(OomfixError):
    """The journal, the lock or an undo cannot proceed."""


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, OomfixError):
        return exc.exit_code
    return EXIT_ERROR
