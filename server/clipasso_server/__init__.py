"""The CLIPasso sketch daemon and engine: photos to line sketches at several abstraction levels."""

__version__ = "0.1.0"
