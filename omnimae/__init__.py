"""omnimae: masked-autoencoder pretraining across modalities.

The Python API (see the README's "Python API"): build, load, save, embed, read_file, reconstruct,
forecast. They are imported on first use, so `import omnimae` stays light (the CLI starts fast).
"""
__version__ = "0.1.0"

_API = ("build", "load", "save", "embed", "read_file", "reconstruct", "forecast", "Reconstruction")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from omnimae import api

        return getattr(api, name)
    raise AttributeError(f"module 'omnimae' has no attribute {name!r}")
