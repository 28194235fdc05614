"""The CLIPasso sketch daemon and engine: turns a photo into line sketches at several abstraction levels."""

__version__ = "0.1.0"
