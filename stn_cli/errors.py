"""The project's error types. Library code raises these; only the CLI turns them into exit codes."""


class StnError(Exception):
    """A failure the user can act on; its message is one line that says what is wrong."""

    exit_code = 1


class ConfigError(StnError):
    """An invalid option, flag or experiments file entry."""

    exit_code = 2


class DataError(StnError):
    """A data set that is missing, unknown or corrupt."""


class Interrupted(StnError):
    """Ctrl-C or SIGTERM stopped a command; what it finished is recorded."""

    exit_code = 130
