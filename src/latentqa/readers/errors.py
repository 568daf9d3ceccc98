"""Errors of reader folders, in a module without heavy imports so the CLI can catch them cheaply."""


class ReaderFolderError(ValueError):
    """A reader folder that cannot be loaded; the message names the file and what is wrong with it."""
