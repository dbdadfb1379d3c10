"""Fault injection: killed drivers and workers, concurrent runs, unwritable outputs, bad input."""
