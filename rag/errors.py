"""The one exception family of the library: every message names the thing and says what to do."""


class RagError(Exception):
    """Base of every error this package raises on purpose; the CLI prints its message, not a traceback."""


class LoadError(RagError):
    """A file could not be turned into a document (unsupported, unreadable, empty, too large, ...)."""


class StoreError(RagError):
    """The store cannot be opened or written as asked (model mismatch, lock held, server down, ...)."""


class QuestionError(RagError):
    """A question cannot be asked as given (empty, too long, ...)."""


class FileTooLargeError(LoadError):
    """A file is over RAG_MAX_FILE_MB."""


class UnsupportedFileError(LoadError):
    """A file's type is not one the loaders read."""
