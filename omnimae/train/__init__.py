"""Pretraining with Lightning: the module, data loading, callbacks and the run folder."""
