"""The exception type for problems a user can fix (bad config, bad input data)."""


class DeepwideError(Exception):
    """A user-facing error: the message names the file, field or value at fault."""
