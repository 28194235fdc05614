"""The sketch engine: CLIPasso's optimisation in PyTorch. It knows nothing of HTTP."""
