"""Forecasting series with a vision MAE: the forecaster, series files, and the evaluation harness."""
