"""omnimae: masked-autoencoder pretraining across modalities."""
__version__ = "0.1.0"
