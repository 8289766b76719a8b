"""The per-pixel and per-star logic, written once as plain Python and compiled per target.

`build(jit)` compiles every function below with `jit` (``numba.njit(...)`` for the CPU,
``numba.cuda.jit(device=True)`` for CUDA) and returns them in a namespace; a function that
calls another calls the compiled version of the same target through the closure (the "dolphin
trick": one source, two targets). The outer loops and launchers live in `cpu.py` and `cuda.py`.

Conventions: pixel centres at integers, x = column (axis 1); arithmetic in float64 except
`detrend_pixel`, which reproduces the float32 numpy expression bit for bit.

Where the CPU and the GPU must agree exactly (detrended pixels, bad-pixel values, centroids and
the integer outputs that hang on them, annulus membership and clipping) products and sums go
through `arithmetic` (`fmul`, `fsub`, `dmul`, `dadd`, `dsub`): plain operators on the CPU and
in the simulator, libdevice's correctly rounded ``*_rn`` functions on a device, which the CUDA
compiler may not fuse into a multiply-add. Floating-point minima and maxima use `lesser` and
`greater` (compare and select, Python's semantics for NaN) rather than min/max, which lower to
NaN-ignoring fmin/fmax on a device.
"""

import math

import numpy as np
from types import SimpleNamespace

from . import moments_core

__all__ = ["build"]

# photometry flags (bit values)
FLAG_APER_EDGE = 1  # the largest aperture leaves the image
FLAG_ANNULUS_EDGE = 2  # part of the annulus lies outside the image
FLAG_NO_ANNULUS = 4  # no annulus pixel: background is NaN



def plain_arithmetic():
    """The exact-arithmetic primitives as plain Python (numba never contracts them on the CPU
    without fastmath, and the simulator runs them as numpy float32/float64 operations)."""

    def fmul(a, b):
        return a * b

    def fsub(a, b):
        return a - b

    def dmul(a, b):
        return a * b

    def dadd(a, b):
        return a + b

    def dsub(a, b):
        return a - b

    return SimpleNamespace(fmul=fmul, fsub=fsub, dmul=dmul, dadd=dadd, dsub=dsub)


def build(jit, arithmetic=None):
    """Compile the shared kernel logic with `jit`; returns a SimpleNamespace of functions.

    `arithmetic`: callables fmul, fsub (float32) and dmul, dadd, dsub (float64), each rounded
    once; default `plain_arithmetic()` compiled with `jit`.
    """
    if arithmetic is None:
        plain = plain_arithmetic()
        arithmetic = SimpleNamespace(**{name: jit(f) for name, f in vars(plain).items()})
    fmul = arithmetic.fmul
    fsub = arithmetic.fsub
    dmul = arithmetic.dmul
    dadd = arithmetic.dadd
    dsub = arithmetic.dsub

    # ----------------------------------------------------------------- NaN-consistent min/max
    def lesser(a, b):
        """min(a, b) as Python computes it (a unless b < a; NaN comparisons are false)."""
        return b if b < a else a

    lesser_j = jit(lesser)

    def greater(a, b):
        """max(a, b) as Python computes it (a unless b > a)."""
        return b if b > a else a

    greater_j = jit(greater)

    # ----------------------------------------------------------------- detrend, bad pixels
    def raw_value(u, swap, signed, bzero):
        """Raw pixel value (float32 exact) from 16 stored bits `u` (uint16 as int)."""
        v = int(u)
        if swap:
            v = ((v >> 8) | (v << 8)) & 0xFFFF
        if signed and v >= 32768:
            v -= 65536
        return v + bzero

    raw_value_j = jit(raw_value)

    def detrend_pixel(v, bias, dark, t, flat, has_flat):
        """(v - bias - dark * t) / flat in float32, each operation rounded once (as numpy
        evaluates it left to right); flat ignored unless `has_flat`."""
        d = fsub(fsub(v, bias), fmul(dark, t))
        if has_flat:
            d = d / flat  # IEEE division on both targets (div.rn on a device)
        return d

    detrend_pixel_j = jit(detrend_pixel)

    def gather_value(img_flat, nbr, wgt, p):
        """Interpolated value of bad pixel number `p` from its (up to 4) weighted neighbours."""
        s = 0.0
        for k in range(4):
            s = dadd(s, dmul(np.float64(wgt[p, k]), np.float64(img_flat[nbr[p, k]])))
        return s

    gather_value_j = jit(gather_value)

    # ----------------------------------------------------------------- sky order statistics
    def sort_key(bits):
        """Order-preserving uint32 key (as int) of a float32 given by its 32 raw bits."""
        b = int(bits) & 0xFFFFFFFF
        return b ^ (((b >> 31) * 0x7FFFFFFF) | 0x80000000)

    sort_key_j = jit(sort_key)

    # ----------------------------------------------------------------- recentroid
    def centroid_star(img, x0, y0, box, n_iter, centre_x, centre_y, r_max):
        """djs_photcen (IDL idlutils / the original's port) for one star.

        Returns (x, y, qmaxshift). Up to `n_iter` passes of a flux-weighted centroid over a box
        of side `box` (edge pixels weighted by their fractional overlap, box clipped at the
        image edges as in the original), stopping when a pass changes nothing; if the centroid
        moves more than cmaxshift from the start in x or y, or the box holds no pixel, the
        start is returned with qmaxshift = 1.
        """
        ny = img.shape[0]
        nx = img.shape[1]
        ddx = x0 - centre_x
        ddy = y0 - centre_y
        dist = math.sqrt(dadd(dmul(ddx, ddx), dmul(ddy, ddy)))
        cmax = lesser_j(greater_j(dadd(dmul(dist, 2.0 / r_max), 2.5), 2.5), 4.5)
        rad = dmul(0.5, box)
        xc = x0
        yc = y0
        for it in range(n_iter):
            xrad = lesser_j(lesser_j(rad, greater_j(xc, 0.0)), greater_j(nx - xc, 0.0))
            i_start = math.floor(xc + 0.5 - xrad)
            i_end = min(math.ceil(xc - 0.5 + xrad) + 1, nx)
            if i_start >= nx or i_end <= 0:
                return x0, y0, 1
            yrad = lesser_j(lesser_j(rad, greater_j(yc, 0.0)), greater_j(ny - yc, 0.0))
            j_start = math.floor(yc + 0.5 - yrad)
            j_end = min(math.ceil(yc - 0.5 + yrad) + 1, ny)
            if j_start >= ny or j_end <= 0:
                return x0, y0, 1
            i_start = int(i_start)
            j_start = int(j_start)
            i_end = int(i_end)
            j_end = int(j_end)
            norm = 0.0
            sx = 0.0
            sy = 0.0
            for j in range(j_start, j_end):
                ya = greater_j(j - 0.5 - yc, -yrad)
                yb = lesser_j(j + 0.5 - yc, yrad)
                fy = yb - ya
                for i in range(i_start, i_end):
                    xa = greater_j(i - 0.5 - xc, -xrad)
                    xb = lesser_j(i + 0.5 - xc, xrad)
                    w = dmul(np.float64(img[j, i]), dmul(xb - xa, fy))
                    norm += w
                    sx = dadd(sx, dmul(w, i - xc))
                    sy = dadd(sy, dmul(w, j - yc))
            xn = xc
            yn = yc
            if norm > 0:
                xn = sx / norm + xc
                yn = sy / norm + yc
            if abs(xn - x0) > cmax or abs(yn - y0) > cmax:
                return x0, y0, 1
            if it > 0 and xn == xc and yn == yc:
                break
            xc = xn
            yc = yn
        return xc, yc, 0

    centroid_star_j = jit(centroid_star)

    # ----------------------------------------------------------------- exact circle overlap
    def arc_primitive(t, r):
        """Integral of sqrt(r^2 - u^2) du from 0 to t (0 <= t <= r)."""
        s = t / r
        if s > 1.0:
            s = 1.0
        return 0.5 * (t * math.sqrt(greater_j(r * r - t * t, 0.0)) + r * r * math.asin(s))

    arc_primitive_j = jit(arc_primitive)

    def corner_area(ex, ey, r, r2, p_x, xc_y, p_xc_y):
        """Signed area of the disk (radius r, at the origin) inside the rectangle spanned by
        the origin and the corner (ex, ey); p_x = arc_primitive(min(|ex|, r)),
        xc_y = sqrt(r^2 - min(|ey|, r)^2), p_xc_y = arc_primitive(xc_y)."""
        ax = lesser_j(abs(ex), r)
        ay = lesser_j(abs(ey), r)
        if ax * ax + ay * ay <= r2:
            q = ax * ay
        else:
            q = ay * xc_y + p_x - p_xc_y
        if (ex < 0) != (ey < 0):
            q = -q
        return q

    corner_area_j = jit(corner_area)

    # ----------------------------------------------------------------- selection (medians)
    def insertion_sort(a, n):
        for i in range(1, n):
            v = a[i]
            j = i - 1
            while j >= 0 and a[j] > v:
                a[j + 1] = a[j]
                j -= 1
            a[j + 1] = v

    insertion_sort_j = jit(insertion_sort)

    def select_pair(src, n, k, w1, w2):
        """(v[k], v[k2]) of the sorted first n values of `src`, k2 = min(k + 1, n - 1), exactly,
        without sorting them all: bracket the ranks between two values of a small sorted
        sample, count the values below the bracket and keep those inside, repeat on the
        survivors until few are left, then insertion-sort those. A bracket that misses the
        ranks is widened on that side. `src` is not modified; w1, w2 are scratch (>= n)."""
        k2 = min(k + 1, n - 1)
        ns = 16  # a small sample: sorting it costs more than the extra survivors (measured)
        margin = 3
        m = n
        base = 0  # how many of the n values lie below everything in the current buffer
        stage = 0  # 0: current values in src, 1: in w1, 2: in w2
        while m > 48:
            if stage == 1:
                cur = w1
                dst = w2
            elif stage == 2:
                cur = w2
                dst = w1
            else:
                cur = src
                dst = w1
            # sorted sample of ns values at a stride, in dst[m - ns: m] (read before overwritten)
            tail = m - ns
            stride = m // ns
            for s in range(ns):
                dst[tail + s] = cur[s * stride]
            for i in range(1, ns):
                v = dst[tail + i]
                j = i - 1
                while j >= 0 and dst[tail + j] > v:
                    dst[tail + j + 1] = dst[tail + j]
                    j -= 1
                dst[tail + j + 1] = v
            lo_i = (k - base) * ns // m - margin
            hi_i = (k2 - base) * ns // m + 1 + margin
            have_lo = lo_i >= 0
            have_hi = hi_i < ns
            lo = dst[tail + max(lo_i, 0)]
            hi = dst[tail + min(hi_i, ns - 1)]
            below = 0
            c = 0
            for attempt in range(3):
                below = 0
                c = 0
                for i in range(m):
                    v = cur[i]
                    under = have_lo & (v < lo)
                    inside = (not under) & ((not have_hi) | (v <= hi))
                    below += under
                    dst[c] = v
                    c += inside
                if (base + below <= k) & (k2 < base + below + c):
                    break
                if base + below > k:
                    have_lo = False
                if k2 >= base + below + c:
                    have_hi = False
            if c >= m:
                # no progress (ties): sort what is left
                break
            base += below
            m = c
            stage = 2 if stage == 1 else 1
        if stage == 0:
            for i in range(m):
                w1[i] = src[i]
            stage = 1
        if stage == 1:
            insertion_sort_j(w1, m)
            return w1[k - base], w1[k2 - base]
        insertion_sort_j(w2, m)
        return w2[k - base], w2[k2 - base]

    select_pair_j = jit(select_pair)

    def median_of(src, n, w1, w2):
        """np.median of src[:n] (mean of the two middle values when n is even), float64."""
        if n <= 0:
            return math.nan
        k = (n - 1) // 2
        a, b = select_pair_j(src, n, k, w1, w2)
        if n % 2 == 1:
            return np.float64(a)
        return 0.5 * (np.float64(a) + np.float64(b))

    median_of_j = jit(median_of)

    # ----------------------------------------------------------------- aperture photometry
    def photometry_star(img, x, y, radii, r_in, r_out, sigclip, sums, tab, ann, w1, w2):
        """Exact-overlap sums for every radius (into sums[:]) and the annulus median.

        Pixels are in the annulus when r_in <= d < r_out (d from the star to the pixel centre;
        photutils' 'center' masks); pixels outside the image contribute nothing. With
        `sigclip`, the median after astropy's sigma clipping (3 sigma, 5 iterations, median
        centre, population std). `tab` (>= 3 * len(radii) * (2 * ceil(max r) + 4) float64),
        `ann`, `w1`, `w2` (>= annulus box size) are scratch.
        Returns (bkg_median, n_annulus, flags).
        """
        ny = img.shape[0]
        nx = img.shape[1]
        nr = radii.shape[0]
        rmax = 0.0
        for k in range(nr):
            sums[k] = 0.0
            rmax = greater_j(rmax, np.float64(radii[k]))
        flags = 0
        i0 = int(math.floor(x - rmax - 0.5)) + 1
        i1 = int(math.ceil(x + rmax + 0.5)) - 1
        j0 = int(math.floor(y - rmax - 0.5)) + 1
        j1 = int(math.ceil(y + rmax + 0.5)) - 1
        if i0 < 0 or j0 < 0 or i1 > nx - 1 or j1 > ny - 1:
            flags |= FLAG_APER_EDGE
        ne_x = i1 - i0 + 2
        ne_y = j1 - j0 + 2
        # tables: per radius, per column edge p(min(|ex|, r)); per row edge xc_y and p(xc_y)
        off_y = nr * ne_x
        for k in range(nr):
            r = np.float64(radii[k])
            for a in range(ne_x):
                ex = i0 + a - 0.5 - x
                tab[k * ne_x + a] = arc_primitive_j(lesser_j(abs(ex), r), r)
            for b in range(ne_y):
                ey = j0 + b - 0.5 - y
                ay = lesser_j(abs(ey), r)
                xcy = math.sqrt(greater_j(r * r - ay * ay, 0.0))
                tab[off_y + 2 * (k * ne_y + b)] = xcy
                tab[off_y + 2 * (k * ne_y + b) + 1] = arc_primitive_j(xcy, r)
        for j in range(max(j0, 0), min(j1, ny - 1) + 1):
            b = j - j0
            ey0 = j - 0.5 - y
            ey1 = ey0 + 1.0
            if ey0 > 0:
                dmin_y = ey0
            elif ey1 < 0:
                dmin_y = -ey1
            else:
                dmin_y = 0.0
            dmax_y = greater_j(abs(ey0), abs(ey1))
            for i in range(max(i0, 0), min(i1, nx - 1) + 1):
                a = i - i0
                ex0 = i - 0.5 - x
                ex1 = ex0 + 1.0
                if ex0 > 0:
                    dmin_x = ex0
                elif ex1 < 0:
                    dmin_x = -ex1
                else:
                    dmin_x = 0.0
                dmax_x = greater_j(abs(ex0), abs(ex1))
                dmin2 = dmin_x * dmin_x + dmin_y * dmin_y
                dmax2 = dmax_x * dmax_x + dmax_y * dmax_y
                v = np.float64(img[j, i])
                for k in range(nr):
                    r = np.float64(radii[k])
                    r2 = r * r
                    if dmax2 <= r2:
                        sums[k] += v
                    elif dmin2 < r2:
                        ta = k * ne_x + a
                        tb = off_y + 2 * (k * ne_y + b)
                        area = (corner_area_j(ex1, ey1, r, r2, tab[ta + 1], tab[tb + 2], tab[tb + 3])
                                - corner_area_j(ex0, ey1, r, r2, tab[ta], tab[tb + 2], tab[tb + 3])
                                - corner_area_j(ex1, ey0, r, r2, tab[ta + 1], tab[tb], tab[tb + 1])
                                + corner_area_j(ex0, ey0, r, r2, tab[ta], tab[tb], tab[tb + 1]))
                        sums[k] += v * area
        # annulus: r_in <= d < r_out by pixel centre
        ri2 = r_in * r_in
        ro2 = r_out * r_out
        ai0 = int(math.ceil(x - r_out))
        ai1 = int(math.floor(x + r_out))
        aj0 = int(math.ceil(y - r_out))
        aj1 = int(math.floor(y + r_out))
        if ai0 < 0 or aj0 < 0 or ai1 > nx - 1 or aj1 > ny - 1:
            flags |= FLAG_ANNULUS_EDGE
        m = 0
        for j in range(max(aj0, 0), min(aj1, ny - 1) + 1):
            dy = j - y
            dy2 = dmul(dy, dy)
            for i in range(max(ai0, 0), min(ai1, nx - 1) + 1):
                dx = i - x
                d2 = dadd(dmul(dx, dx), dy2)
                if (d2 >= ri2) & (d2 < ro2):
                    ann[m] = img[j, i]
                    m += 1
        if m == 0:
            return math.nan, 0, flags | FLAG_NO_ANNULUS
        med = median_of_j(ann, m, w1, w2)
        if sigclip:
            for it in range(5):
                mean = 0.0
                for i in range(m):
                    mean += np.float64(ann[i])
                mean /= m
                var = 0.0
                for i in range(m):
                    d = np.float64(ann[i]) - mean
                    var = dadd(var, dmul(d, d))
                std = math.sqrt(var / m)
                lo = dsub(med, dmul(std, 3.0))
                hi = dadd(med, dmul(std, 3.0))
                c = 0
                for i in range(m):
                    v = ann[i]
                    if (np.float64(v) >= lo) & (np.float64(v) <= hi):
                        ann[c] = v
                        c += 1
                if c == m:
                    break
                m = c
                if m == 0:
                    return math.nan, 0, flags | FLAG_NO_ANNULUS
                med = median_of_j(ann, m, w1, w2)
        return med, m, flags

    photometry_star_j = jit(photometry_star)

    moments = moments_core.build(jit, lesser_j, greater_j)

    return SimpleNamespace(
        lesser=lesser_j,
        greater=greater_j,
        raw_value=raw_value_j,
        detrend_pixel=detrend_pixel_j,
        gather_value=gather_value_j,
        sort_key=sort_key_j,
        centroid_star=centroid_star_j,
        arc_primitive=arc_primitive_j,
        corner_area=corner_area_j,
        insertion_sort=insertion_sort_j,
        select_pair=select_pair_j,
        median_of=median_of_j,
        photometry_star=photometry_star_j,
        moments_star=moments.moments_star,
    )
