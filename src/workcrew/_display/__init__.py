"""Displays: progress lines and bars, timelines.  They know nothing of the engine."""
