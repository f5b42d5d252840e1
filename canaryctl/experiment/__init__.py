"""Experiments: variations of a flag on a fixed split, compared with anytime-valid intervals."""
