"""Camera constants as a value: the pipeline is given a `Camera`, never module globals."""

from dataclasses import dataclass, field, replace

__all__ = ["Camera", "EL_NINO", "APERTURE_RADII"]

APERTURE_RADII = (2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)


@dataclass(frozen=True)
class Camera:
    """Facts about one pointing camera.

    Attributes
    ----------
    name : str
        Camera name, written to output headers.
    nx, ny : int
        Image width (columns, numpy axis 1) and height (rows), pixels.
    bias_adu : tuple of float
        Median bias of quadrants 1..4, ADU (fallback when no master bias).
    bias_clipped_mean_adu : tuple of float
        Sigma-clipped mean bias of quadrants 1..4, ADU.
    read_noise_adu : tuple of float
        Read noise of quadrants 1..4, ADU.
    dark_adu_per_s : float
        Mean dark current, ADU/s/pixel.
    dark_quad_adu_per_s : tuple of float
        Dark current of quadrants 1..4, ADU/s/pixel (fallback when no master dark).
    gain_e_per_adu : float
        Detector gain, electrons per ADU (used by the simulator and error estimates).
    saturation_adu : int
        Raw value at which the 14-bit ADC saturates, ADU.
    zp_saturation_adu : float
        A star whose raw centroid pixel is at or above this is not used for zeropoints, ADU.
    pixel_scale_arcsec : float
        Approximate pixel scale, arcsec/pixel.
    sci_fov_radius_pix : float
        Radius of the science instrument's field about the image centre, pixels.
    nominal_zp : float
        Clear-sky zeropoint, mag of a 1 ADU/s source (G' = G + 0.25 (BP - RP)).
    dark_sky_adu_per_s : float
        Typical dark sky, ADU/s/pixel.
    standard_exptime_s : float
        Standard exposure time, seconds.
    aperture_radii_pix : tuple of float
        Photometry aperture radii, pixels.
    standard_aperture_index : int
        Index into `aperture_radii_pix` of the standard aperture.
    annulus_pix : tuple of float
        Inner and outer radius of the sky annulus, pixels.
    centroid_box_pix : int
        Side of the centroiding box, pixels.
    centroid_iterations : int
        Maximum number of recentroiding passes.
    gaia_nside : int
        HEALPix nside of the Gaia chunk files (RING order).
    dome_threshold_adu_per_s : float
        A pixel below this (detrended, per second) counts as dome-vignetted.
    dome_fraction : float
        A frame is dome-vignetted when at least this fraction of pixels is below the threshold.
    timezone_offset_hours : float
        Local time minus UTC, hours (MST = -7).
    """

    name: str = "El Nino"
    nx: int = 3296
    ny: int = 2472
    bias_adu: tuple = (87.0, 152.0, 118.0, 110.0)
    bias_clipped_mean_adu: tuple = (87.55, 151.81, 118.44, 109.75)
    read_noise_adu: tuple = (12.54, 13.05, 12.78, 12.65)
    dark_adu_per_s: float = 0.0897
    dark_quad_adu_per_s: tuple = (0.0961, 0.0997, 0.0837, 0.0836)
    gain_e_per_adu: float = 1.6
    saturation_adu: int = 16383
    zp_saturation_adu: float = 15300.0
    pixel_scale_arcsec: float = 8.66
    sci_fov_radius_pix: float = 665.49
    nominal_zp: float = 17.58
    dark_sky_adu_per_s: float = 3.2
    standard_exptime_s: float = 20.0
    aperture_radii_pix: tuple = APERTURE_RADII
    standard_aperture_index: int = 1
    annulus_pix: tuple = (12.0, 20.0)
    centroid_box_pix: int = 8
    centroid_iterations: int = 11
    gaia_nside: int = 32
    dome_threshold_adu_per_s: float = 0.5
    dome_fraction: float = 0.01
    timezone_offset_hours: float = -7.0

    @property
    def shape(self):
        """Image shape (ny, nx)."""
        return (self.ny, self.nx)

    @property
    def centre(self):
        """Image centre (x, y) used for radii, pixels (0-indexed, pixel centres at integers)."""
        return (self.nx / 2 - 0.5, self.ny / 2 - 0.5)

    def quadrant_slices(self):
        """Slices (rows, cols) of quadrants 1..4: q1 upper right, q2 upper left, q3 lower left,
        q4 lower right, with the origin at lower left."""
        hy, hx = self.ny // 2, self.nx // 2
        return (
            (slice(hy, None), slice(hx, None)),
            (slice(hy, None), slice(0, hx)),
            (slice(0, hy), slice(0, hx)),
            (slice(0, hy), slice(hx, None)),
        )

    def with_(self, **changes):
        """A copy with some fields changed (e.g. a small frame for tests)."""
        return replace(self, **changes)


EL_NINO = Camera()
