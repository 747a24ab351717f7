"""Shared data machinery: file policies every data source uses the same way."""
