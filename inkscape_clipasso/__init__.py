"""The CLIPasso Inkscape extension (inkex and the standard library only) and the shared protocol."""
