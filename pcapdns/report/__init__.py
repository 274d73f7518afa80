"""Outputs shared by the front ends: the terminal report and progress display."""
