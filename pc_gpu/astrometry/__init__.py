"""Astrometry: star detection, plate solving from Gaia patterns, verification of a WCS."""
