"""Decoding of file formats, one module per kind of file; the modalities build their datasets on these."""
