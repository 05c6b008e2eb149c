"""Figures and reports built from measurements."""
