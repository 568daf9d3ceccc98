"""Why a training run stopped, in a module without heavy imports so the CLI can catch it cheaply."""


class TrainingStopped(RuntimeError):
    """A run that cannot go on; the message says where it stands and how to continue."""


class NonFiniteLossError(TrainingStopped):
    """Too many non-finite losses or gradients in a row."""


class CannotSave(TrainingStopped):
    """A checkpoint or the best reader could not be written (full disk, permissions); what was published before is
    untouched."""
