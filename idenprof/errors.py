"""The one exception type the command-line tools turn into a one-line message and exit code 2."""


class IdenprofError(Exception):
    """A problem the user can fix: the message names it and says what to do, in one line."""


class DownloadError(IdenprofError):
    """The dataset (or weights) could not be fetched or verified."""


class DatasetError(IdenprofError):
    """The dataset on disk is missing, incomplete or not in the train/test class-folder layout."""


class ModelFileError(IdenprofError):
    """A model file or its class index cannot be used."""


class ConfigError(IdenprofError):
    """A flag or setting has a value that cannot work."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """The first line of `error`'s message (at most `limit` characters), or its type's name when
    the message is empty: for quoting a library's error inside our own one-line message."""
    text = str(error).strip().splitlines()
    return text[0][:limit] if text else type(error).__name__
