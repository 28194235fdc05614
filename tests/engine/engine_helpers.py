"""Helpers shared by the engine tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations


class CountingModel:
    """The real loss model, recording how many images each ``features`` call gets; every call
    goes to the real model."""

    def __init__(self, model) -> None:
        self.model = model
        self.input_size, self.arithmetic = model.input_size, model.arithmetic
        self.calls: list[int] = []

    def features(self, images):
        self.calls.append(int(images.shape[0]))
        return self.model.features(images)
