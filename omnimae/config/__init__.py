"""Configs: schemas and checks, composition with Hydra, and building objects from a config."""
