"""Astrometry: the TAN-SIP geometry (`tan`), star detection (`detect`), plate solving from
Gaia quad patterns (`solve`, `patterns`, `tansip`), verification of a WCS (`verify`), refining
a frame's WCS on its Gaia stars (`refine`) and reporting where the camera points (`pointing`).
Import from the modules."""
