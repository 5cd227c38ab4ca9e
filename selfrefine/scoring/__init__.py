"""Measuring judges and policies: metrics, selection of training data, judge gating and score replay.

Pure functions and small helpers the stages in `selfrefine/tasks/` share; nothing here runs a stage."""
