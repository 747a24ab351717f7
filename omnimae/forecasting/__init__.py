"""Forecasting series with a vision MAE (VisionTS): the forecaster, the periodicity choice, forecasts
written and plotted, the verbs (run.py) and the evaluation harness (eval/). Series are read, and drawn
as images, by the time-series modality, reached through the registry (series.py: the contract)."""
