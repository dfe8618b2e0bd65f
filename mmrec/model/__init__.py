"""The model: item tower, sequence transformer, losses, and the scoring contract (``history``)."""
