"""Satellite streak detection on the detrended image (issues 6 and 13).

Stages (the image-sized ones run as one-source kernels, `pc_gpu.kernels.streak_core`, on the
backend's device; the per-candidate refinement works on small host arrays), one module each:

1. **Candidates** (`candidates`): 4 x 4 pixel block sums of the unmasked pixels; median and
   MAD of the block means in cells of 8 x 8 blocks (32 pix), cells on a steep background
   gradient (dome edges) masked with their neighbours; every catalogue star masks the blocks
   within a radius growing with its flux (for the streaks' ends, only its pixels); a sliding
   fast digital Radon transform (dyadic, four orientations) of the block signal-to-noise image
   gives, at every block, the best 16-block (64 pix) line sum over all slopes; those above
   `seed_snr` are seeds.
2. **Refinement** (`refine`; strongest seed first, at full resolution): the band of pixels
   around the seed's line across the whole frame is gathered; the line is re-fitted from chunk
   matched-filter offsets and the extent is the box segment of the per-column matched-filter
   signal with the highest likelihood. A candidate is kept when its segment is long enough,
   significant (`min_snr`) and consistently positive (a sign test, robust to single bright
   outliers); seeds along or through it are then dropped.
3. **Ends** (`ends`): each end is the posterior median of the cut between streak and sky
   (masked pixels count as missing data, so an end hidden by a star lands mid-mask; stars are
   masked by their pixels here, and the cells masked as steep gradients are not); an end
   within the streak's width of the frame edge, or one the data allow to run on to the edge,
   is put where the refined line crosses the frame boundary.
4. **Measurements** (`measure`): width (FWHM) and flux per pixel of length from a fit of the
   streak's own profile across it, with the band's own background, and their errors; the
   line's offset and angle refined on the same pixels, and the profile fitted again.
5. **Table** (`table`): the STREAKS rows (pieces of one streak split by a star merged), the
   catalogue's `on_streak` flags, and matching against reference segments.

The step is cooperative about time: with a limit it checks the clock between stages and
between candidates and gives up cleanly (`StreakResult.timed_out`, empty table).
"""

from .detect import StreakParams, StreakResult, detect_streaks, kernel_target, warm_up
from .table import STREAK_DTYPE, clip_segment, empty_streak_table, match_streaks, stars_on_streaks

__all__ = ["StreakParams", "StreakResult", "STREAK_DTYPE", "empty_streak_table", "detect_streaks", "warm_up",
           "stars_on_streaks", "kernel_target", "clip_segment", "match_streaks"]
