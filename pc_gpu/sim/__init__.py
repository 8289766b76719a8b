"""Simulated data from the real sky: Gaia chunk trees, raw camera frames, observing nights."""

from .chunks import Region, build_chunk_tree, parse_region, read_bundled_gaia, read_gaia_table
from .detector import SimCalibrations, make_calibrations
from .frameio import FramePaths, raw_filename, write_calibrations, write_frame
from .render import aperture_fractions, make_wcs
from .simulate import SimFrame, simulate_frame
from .night import DemoField, NightPaths, make_demo_field, simulate_night

__all__ = [
    "Region", "build_chunk_tree", "parse_region", "read_bundled_gaia", "read_gaia_table",
    "FramePaths", "SimCalibrations", "SimFrame", "aperture_fractions", "make_calibrations",
    "make_wcs", "raw_filename", "simulate_frame", "write_calibrations", "write_frame",
    "DemoField", "NightPaths", "make_demo_field", "simulate_night",
]
