"""Adaptive second moments of a star (PSF FWHM, ellipticity, angle), written once as plain
Python and compiled per target by `_core.build` (the same scheme as the rest of the kernels)."""

import math

import numpy as np
from types import SimpleNamespace

__all__ = ["build", "MOMENT_WEIGHT_FRACTION", "MOMENT_WEIGHT_PAD", "PIXEL_KAPPA4"]

MOMENT_WEIGHT_FRACTION = 0.25
"""The adaptive-moment weight's covariance is this fraction of the star's...: narrower than the
star, so that a PSF's wings have little say in its FWHM (a property of the core)."""
MOMENT_WEIGHT_PAD = 0.4
"""...plus this (pixels^2) on each axis: keeps the weight about a pixel wide on undersampled
stars (the estimate of a pixel-integrated Gaussian star does not depend on either)."""
PIXEL_KAPPA4 = -1.0 / 120.0
"""Fourth cumulant of a square pixel's flat response along each axis, pixels^4 (its variance
is 1/12): the moments' model star is a Gaussian of covariance C (the true one plus 1/12) with
this term added (Edgeworth), i.e. the pixel-integrated Gaussian to O(PIXEL_KAPPA4^2)."""


def build(jit, lesser_j, greater_j):
    """Compile the moments logic with `jit`, calling the given compiled `lesser`/`greater`;
    returns a SimpleNamespace with moments_star."""
    def gaussian_from_moments(kxx, kyy, kxy, ixx, iyy, ixy):
        """Covariance (pixels^2) of the continuous Gaussian whose moments under a Gaussian
        weight of inverse covariance I are K: (K^-1 - I)^-1, or 2 K when that is not positive
        definite (K positive definite)."""
        kdet = kxx * kyy - kxy * kxy
        axx = kyy / kdet - ixx
        ayy = kxx / kdet - iyy
        axy = -kxy / kdet - ixy
        adet = axx * ayy - axy * axy
        if (adet > 0.0) & (axx > 0.0):
            return ayy / adet, axx / adet, -axy / adet
        return 2.0 * kxx, 2.0 * kyy, 2.0 * kxy

    gaussian_from_moments_j = jit(gaussian_from_moments)

    def step_factor(ratio):
        """A step's factor from the ratio of its continuous to its actual response: the ratio
        where below 1 (at least 0.1), else 1 (never lengthened)."""
        if ratio != ratio:
            return 0.1
        return greater_j(lesser_j(ratio, 1.0), 0.1)

    step_factor_j = jit(step_factor)

    def moments_star(img, x, y, bkg, max_hw, n_iter):
        """Adaptive (Gaussian-weighted) second moments of one star, background `bkg`
        (ADU/pixel) subtracted, matched on the pixel grid. Each pass weights the pixels with an
        elliptical Gaussian of covariance W = MOMENT_WEIGHT_FRACTION C + MOMENT_WEIGHT_PAD (C
        the current estimate) and takes the weighted centre offset m and covariance K of the
        star and, with the same weights on the same pixels, of a model star: the Gaussian of
        covariance C at the current centre with the pixel's fourth cumulant (`PIXEL_KAPPA4`),
        i.e. the pixel-integrated Gaussian, sampled at the pixel centres. G(K) = (K^-1 -
        W^-1)^-1 is the covariance of a continuous Gaussian that gives K (2 K when that is not
        positive definite); C moves by G(K_star) - G(K_model) and the centre by
        C (K_star^-1 m_star - K_model^-1 m_model), each step shortened by the ratio of a
        continuous Gaussian's response to the model's on the grid where that is larger (it can
        reach several times it on undersampled stars; from the sums' derivatives), C at most
        halved per pass; so that at convergence the star's weighted moments on the grid are
        the model's. Matching the sums on the grid removes what the
        pixels do to a weight about a pixel wide (a bias and a scatter with the star's
        sub-pixel position) that the continuous relation alone leaves in: C less 1/12 is then
        the covariance of a Gaussian star before pixelisation. Pixels within 4 sigma of the
        weight, at most `max_hw` from the centre, inside the image.

        Returns (x, y, cxx, cyy, cxy, status): the centre (pixels) and C (pixels^2, of the
        pixelated image); status 0 converged, 1 failed (NaN moments), 2 the weight reached
        `max_hw` or the image edge, 3 not converged in `n_iter` passes.
        """
        ny = img.shape[0]
        nx = img.shape[1]
        cxx = 1.5
        cyy = 1.5
        cxy = 0.0
        xc = x
        yc = y
        status = 3
        for it in range(n_iter):
            wxx = MOMENT_WEIGHT_FRACTION * cxx + MOMENT_WEIGHT_PAD
            wyy = MOMENT_WEIGHT_FRACTION * cyy + MOMENT_WEIGHT_PAD
            wxy = MOMENT_WEIGHT_FRACTION * cxy
            det = wxx * wyy - wxy * wxy
            cdet = cxx * cyy - cxy * cxy
            if (det <= 0.0) | (det != det) | (cdet <= 0.0):
                return xc, yc, math.nan, math.nan, math.nan, 1
            ixx = wyy / det
            iyy = wxx / det
            ixy = -wxy / det
            # the model Gaussian's inverse covariance, and the model's exponent with the weight's
            cixx = cyy / cdet
            ciyy = cxx / cdet
            cixy = -cxy / cdet
            mxx_ = ixx + cixx
            myy_ = iyy + ciyy
            mxy_ = ixy + cixy
            hw = int(math.ceil(4.0 * math.sqrt(greater_j(wxx, wyy))))
            if hw > max_hw:
                hw = max_hw
                status = 2
            i0 = int(math.floor(xc)) - hw
            i1 = int(math.floor(xc)) + hw + 1
            j0 = int(math.floor(yc)) - hw
            j1 = int(math.floor(yc)) + hw + 1
            if (i0 < 0) | (j0 < 0) | (i1 > nx - 1) | (j1 > ny - 1):
                status = 2
            s0 = 0.0
            sx = 0.0
            sy = 0.0
            sxx = 0.0
            syy = 0.0
            sxy = 0.0
            t0 = 0.0
            tx = 0.0
            ty = 0.0
            txx = 0.0
            tyy = 0.0
            txy = 0.0
            # the model's sums differentiated by cxx, cyy, cxy (its exponent's derivatives are
            # hx^2 / 2, hy^2 / 2 and hx hy, h = C^-1 d)
            rxx0 = 0.0
            ryy0 = 0.0
            rxy0 = 0.0
            rxx = 0.0
            ryy = 0.0
            rxy = 0.0
            # ...and by the centre (the exponent's derivatives by xc, yc are hx, hy)
            px0 = 0.0
            py0 = 0.0
            pxx = 0.0
            pyy = 0.0
            for j in range(max(j0, 0), min(j1, ny - 1) + 1):
                dy = j - yc
                for i in range(max(i0, 0), min(i1, nx - 1) + 1):
                    dx = i - xc
                    q = ixx * dx * dx + 2.0 * ixy * dx * dy + iyy * dy * dy
                    if q < 16.0:
                        w = math.exp(-0.5 * q) * (np.float64(img[j, i]) - bkg)
                        s0 += w
                        sx += w * dx
                        sy += w * dy
                        sxx += w * dx * dx
                        syy += w * dy * dy
                        sxy += w * dx * dy
                        # the pixel's fourth cumulant as the first Edgeworth term (He4 per axis)
                        hx = cixx * dx + cixy * dy
                        hy = cixy * dx + ciyy * dy
                        edge = (hx * hx * (hx * hx - 6.0 * cixx) + 3.0 * cixx * cixx
                                + hy * hy * (hy * hy - 6.0 * ciyy) + 3.0 * ciyy * ciyy)
                        v = math.exp(-0.5 * (mxx_ * dx * dx + 2.0 * mxy_ * dx * dy + myy_ * dy * dy)) * (
                            1.0 + PIXEL_KAPPA4 / 24.0 * edge)
                        t0 += v
                        tx += v * dx
                        ty += v * dy
                        txx += v * dx * dx
                        tyy += v * dy * dy
                        txy += v * dx * dy
                        vxx = 0.5 * v * hx * hx
                        vyy = 0.5 * v * hy * hy
                        vxy = v * hx * hy
                        rxx0 += vxx
                        ryy0 += vyy
                        rxy0 += vxy
                        rxx += vxx * dx * dx
                        ryy += vyy * dy * dy
                        rxy += vxy * dx * dy
                        px0 += v * hx
                        py0 += v * hy
                        pxx += v * hx * dx
                        pyy += v * hy * dy
            if (s0 <= 0.0) | (t0 <= 0.0):
                return xc, yc, math.nan, math.nan, math.nan, 1
            mx = sx / s0
            my = sy / s0
            kxx = sxx / s0 - mx * mx
            kyy = syy / s0 - my * my
            kxy = sxy / s0 - mx * my
            ex = tx / t0
            ey = ty / t0
            lxx = txx / t0 - ex * ex
            lyy = tyy / t0 - ey * ey
            lxy = txy / t0 - ex * ey
            kdet = kxx * kyy - kxy * kxy
            ldet = lxx * lyy - lxy * lxy
            if (kdet <= 0.0) | (ldet <= 0.0):
                return xc, yc, math.nan, math.nan, math.nan, 1
            # the step of C that makes a continuous Gaussian's K go from the model's to the
            # star's: (K^-1 - W^-1)^-1 of the star's K less that of the model's
            dxx, dyy, dxy = gaussian_from_moments_j(kxx, kyy, kxy, ixx, iyy, ixy)
            gxx, gyy, gxy = gaussian_from_moments_j(lxx, lyy, lxy, ixx, iyy, ixy)
            # ...shortened where the model's K on the grid responds more than a continuous
            # Gaussian's, (K C^-1)^2 per component (the sums' derivatives by C, weight held)
            bxx = (lxx / cxx) ** 2 / (rxx / t0 - txx * rxx0 / (t0 * t0))
            byy = (lyy / cyy) ** 2 / (ryy / t0 - tyy * ryy0 / (t0 * t0))
            bxy = (lxx * lyy / (cxx * cyy)) / (rxy / t0 - txy * rxy0 / (t0 * t0))
            nxx = cxx + (dxx - gxx) * step_factor_j(bxx)
            nyy = cyy + (dyy - gyy) * step_factor_j(byy)
            nxy = cxy + (dxy - gxy) * step_factor_j(bxy)
            # at most halved per pass, and positive definite
            nxx = greater_j(nxx, 0.5 * cxx)
            nyy = greater_j(nyy, 0.5 * cyy)
            nxy = greater_j(lesser_j(nxy, 0.9 * math.sqrt(nxx * nyy)), -0.9 * math.sqrt(nxx * nyy))
            # the centre: C (K^-1 m of the star - that of the model), shortened likewise
            # against the model's d m / d centre (K C^-1 for a continuous Gaussian)
            ux = (kyy * mx - kxy * my) / kdet - (lyy * ex - lxy * ey) / ldet
            uy = (kxx * my - kxy * mx) / kdet - (lxx * ey - lxy * ex) / ldet
            xc += (nxx * ux + nxy * uy) * step_factor_j((lxx / cxx) / ((pxx - ex * px0) / t0))
            yc += (nxy * ux + nyy * uy) * step_factor_j((lyy / cyy) / ((pyy - ey * py0) / t0))
            change = abs(nxx - cxx) + abs(nyy - cyy) + abs(nxy - cxy)
            cxx = nxx
            cyy = nyy
            cxy = nxy
            if (abs(xc - x) > 3.0) | (abs(yc - y) > 3.0) | (cxx <= 0.0) | (cyy <= 0.0):
                return xc, yc, math.nan, math.nan, math.nan, 1
            if change < 1e-5 * (cxx + cyy):
                if status == 3:
                    status = 0
                return xc, yc, cxx, cyy, cxy, status
        return xc, yc, cxx, cyy, cxy, status

    moments_star_j = jit(moments_star)

    return SimpleNamespace(moments_star=moments_star_j)
