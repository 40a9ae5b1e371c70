"""Model output parameterizations and the linear maps between them.

With ``x = alpha x0 + sigma eps``, each prediction is linear in ``(x, out)``, so a
solver converts the model output to the quantity it integrates (``x0`` or ``eps``) with
two per-sample coefficients, inside the fused update.
"""

import numpy as np

PREDICTIONS = ("eps", "x0", "v", "flow")


def conversion(prediction: str, target: str, alpha, sigma, dalpha=None, dsigma=None):
    """``(cx, co)`` with ``target = cx * x + co * out`` for a model predicting ``prediction``.

    Args:
        prediction: ``"eps"`` (noise), ``"x0"`` (data), ``"v"`` (``alpha eps - sigma
            x0``, Salimans & Ho) or ``"flow"`` (the velocity ``dx/dt = alpha' x0 +
            sigma' eps``; ``eps - x0`` for rectified flow, which needs ``dalpha``,
            ``dsigma``).
        target: ``"x0"``, ``"eps"`` or ``"velocity"`` (``dx/dt``, which needs
            ``dalpha``, ``dsigma``).
        alpha, sigma (and dalpha, dsigma): float64 arrays at the evaluation point.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    if target not in ("x0", "eps", "velocity"):
        raise ValueError(f"target must be 'x0', 'eps' or 'velocity', got {target!r}")
    if target == "velocity":  # alpha' x0 + sigma' eps
        (x0x, x0o), (ex, eo) = (
            conversion(prediction, t, alpha, sigma, dalpha, dsigma) for t in ("x0", "eps")
        )
        if prediction == "flow":
            return np.zeros_like(alpha), np.ones_like(alpha)
        return dalpha * x0x + dsigma * ex, dalpha * x0o + dsigma * eo
    zero = np.zeros_like(alpha)
    if prediction == "eps":
        x0 = (1 / alpha, -sigma / alpha)
        eps = (zero, zero + 1)
    elif prediction == "x0":
        x0 = (zero, zero + 1)
        eps = (1 / sigma, -alpha / sigma)
    elif prediction == "v":
        n = alpha**2 + sigma**2
        x0 = (alpha / n, -sigma / n)
        eps = (sigma / n, alpha / n)
    else:
        if dalpha is None or dsigma is None:
            raise ValueError("flow predictions need the schedule's derivatives")
        det = alpha * dsigma - sigma * dalpha
        x0 = (dsigma / det, -sigma / det)
        eps = (-dalpha / det, alpha / det)
    return x0 if target == "x0" else eps
