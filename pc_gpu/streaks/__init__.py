"""Satellite streak detection on the detrended image (issue 6).

Stages (the image-sized ones run as one-source kernels, `pc_gpu.kernels.streak_core`, on the
backend's device; the per-candidate refinement works on small host arrays):

1. **Blocks**: 4 x 4 pixel sums and counts of the unmasked pixels (static bad pixels out).
2. **Background**: median and MAD of the block means in cells of 8 x 8 blocks (32 pix); cells
   on a steep background gradient (dome edges) are masked with their neighbours.
3. **Stars**: every catalogue star masks the blocks within a radius growing with its flux
   (for the streaks' ends, only the pixels within that radius).
4. **Line transform**: a sliding fast digital Radon transform (dyadic, four orientations) of
   the block signal-to-noise image gives, at every block, the best 16-block (64 pix) line
   sum over all slopes; those above `seed_snr` are seeds.
5. **Refinement** (strongest seed first, at full resolution): the band of pixels around the
   seed's line across the whole frame is gathered; the line is re-fitted from chunk
   matched-filter offsets, the width from the stacked profile, and the extent is the box
   segment of the per-column matched-filter signal with the highest likelihood; each end is
   then the posterior median of the cut between streak and sky there (masked pixels count as
   missing data, so an end hidden by a star lands mid-mask). A candidate is kept when its
   segment is long enough, significant (`min_snr`) and consistently positive (a sign test,
   robust to single bright outliers).

The step is cooperative about time: with a limit it checks the clock between stages and
between candidates and gives up cleanly (`StreakResult.timed_out`, empty table).
"""

from .detect import StreakParams, StreakResult, detect_streaks, kernel_target, warm_up
from .ends import _ends  # noqa: F401  (tests)
from .table import STREAK_DTYPE, clip_segment, empty_streak_table, match_streaks, stars_on_streaks

__all__ = ["StreakParams", "StreakResult", "STREAK_DTYPE", "empty_streak_table", "detect_streaks", "warm_up",
           "stars_on_streaks", "kernel_target", "clip_segment", "match_streaks"]
