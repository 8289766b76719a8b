"""Astrometry: refining a frame's WCS on its Gaia stars (`refine`) and reporting where the
camera points (`pointing`). Import from the modules."""
