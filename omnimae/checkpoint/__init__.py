"""Checkpoints: omnimae's own format, conversions from and to other layouts, trust, the hub cache."""
