"""The solvers, as plans of fused steps (:mod:`pygen.solvers.plan`).

Notation for a step from grid point s (index i) to t (i + 1): ``alpha``, ``sigma``,
``lambda = log(alpha / sigma)``, ``h = lambda_t - lambda_s``, Karras' ``sigma~ =
sigma / alpha``. Formulas follow the papers named in each builder; where diffusers
implements the same algorithm the coefficients are written the way it writes them, so
the trajectories agree.
"""

import math

import numpy as np

from pygen.solvers.grids import Grid
from pygen.solvers.plan import Step
from pygen.solvers.predictions import conversion
from pygen.solvers.schedules import Schedule


class Context:
    """What every builder needs: the grid, the schedule and the prediction type."""

    def __init__(self, grid: Grid, schedule: Schedule, prediction: str):
        self.grid, self.schedule, self.prediction = grid, schedule, prediction
        self.a, self.s, self.lam, self.t = grid.alpha, grid.sigma, grid.lam, grid.t
        self.n = grid.steps

    def convert(self, i: int, target: str, t=None):
        """``(cx, co)`` at grid point i, or at time ``t`` off the grid."""
        if t is None:
            t, alpha, sigma = self.t[i], self.a[i], self.s[i]
        else:
            alpha, sigma = self.schedule.alpha_sigma(t)
        if target == "velocity" or self.prediction == "flow":
            da, ds = self.schedule.derivatives(t)
            return conversion(self.prediction, target, alpha, sigma, da, ds)
        return conversion(self.prediction, target, alpha, sigma)

    def eval_step(self, i: int, target: str, **kw) -> Step:
        cx, co = self.convert(i, target)
        return Step(t=self.t[i], cx=cx, co=co, **kw)

    def ends_at_zero(self, i: int) -> bool:
        return bool((self.s[i + 1] == 0).all())


def _pred(k: int):
    return ("pred", k)


def ddim(ctx: Context, eta: float = 0.0, ends=None) -> list[Step]:
    """DDIM (Song et al. 2021) with stochasticity ``eta``; with eta = 0 it is also
    Euler's method on ``dx~/dsigma~`` (k-diffusion's and diffusers' Euler).

    ``ends``: ``(alpha, sigma)`` arrays ``[steps, B]`` where each step lands, when that
    is not the next grid point (diffusers' DDIM steps to ``t - T // steps``, which
    "trailing" spacing does not always put on the next timestep)."""
    plan = []
    for i in range(ctx.n):
        a0, s0 = ctx.a[i], ctx.s[i]
        a1, s1 = (ctx.a[i + 1], ctx.s[i + 1]) if ends is None else (ends[0][i], ends[1][i])
        h = (np.log(a1) - np.log(s1)) - ctx.lam[i]
        sig = eta * s1 * np.sqrt(-np.expm1(-2 * h))
        ce = np.sqrt(np.maximum(s1**2 - sig**2, 0))
        plan.append(ctx.eval_step(i, "x0", a=ce / s0, bp=a1 - a0 * ce / s0, c=sig if eta else 0.0))
    return plan


def _multistep_order(i: int, n: int, order: int, lower_order_final: bool) -> int:
    """The order diffusers' multistep schedulers use at step i: warm-up from 1, and
    (with ``lower_order_final`` and fewer than 15 steps) 1 and 2 at the last two."""
    k = min(order, i + 1)
    if lower_order_final and n < 15:
        k = min(k, n - i) if i >= n - 2 else k
    return k


def dpmpp(
    ctx: Context,
    order: int = 2,
    sde: bool = False,
    solver_type: str = "midpoint",
    lower_order_final: bool = True,
    euler_at_final: bool = False,
) -> list[Step]:
    """DPM-Solver++ multistep (Lu et al. 2022), orders 1-3, ODE or SDE (2M-SDE, 3M-SDE),
    in data prediction; ``solver_type`` ``"midpoint"`` or ``"heun"`` for order 2."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    n, lam, plan = ctx.n, ctx.lam, []
    for i in range(n):
        k = _multistep_order(i, n, order, lower_order_final)
        if i == n - 1 and (euler_at_final or ctx.ends_at_zero(i)):
            k = 1
        a1, s0, s1 = ctx.a[i + 1], ctx.s[i], ctx.s[i + 1]
        h = lam[i + 1] - lam[i]
        if sde:
            ax = s1 / s0 * np.exp(-h)
            phi1 = -a1 * np.expm1(-2 * h)
            phi2 = a1 * (np.expm1(-2 * h) / (2 * h) + 1)
            phi3 = a1 * ((-np.expm1(-2 * h) - 2 * h) / (2 * h) ** 2 - 0.5)
            mid = 0.5 * phi1
            c = s1 * np.sqrt(-np.expm1(-2 * h))
        else:
            ax = s1 / s0
            phi1 = -a1 * np.expm1(-h)
            phi2 = a1 * (np.expm1(-h) / h + 1)
            phi3 = -a1 * ((np.expm1(-h) + h) / h**2 - 0.5)
            mid = 0.5 * phi1
            c = 0.0
        # m0 (this step's x0), m1 and m2 (the two before): the D's of the paper expanded.
        b = [phi1, 0.0, 0.0]
        if k == 2:
            r0 = (lam[i] - lam[i - 1]) / h
            d1 = (mid if solver_type == "midpoint" else phi2) / r0
            b = [b[0] + d1, -d1, 0.0]
        elif k == 3:
            r0, r1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
            # D1 = (1 + r0/(r0+r1)) D1_0 - r0/(r0+r1) D1_1; D2 = (D1_0 - D1_1)/(r0+r1);
            # D1_0 = (m0 - m1)/r0, D1_1 = (m1 - m2)/r1.
            c10 = phi2 * (1 + r0 / (r0 + r1)) + phi3 / (r0 + r1)
            c11 = -phi2 * r0 / (r0 + r1) - phi3 / (r0 + r1)
            b = [phi1 + c10 / r0, -c10 / r0 + c11 / r1, -c11 / r1]
        ops = [(_pred(i - j), b[j]) for j in (1, 2) if j < k]
        plan.append(ctx.eval_step(i, "x0", a=ax, bp=b[0], c=c if sde else 0.0, operands=ops))
    return plan


def dpm_solver(ctx: Context, order: int = 2) -> list[Step]:
    """DPM-Solver single-step (Lu et al. 2022, Algorithms 1-2), noise prediction,
    ``order`` model calls per grid interval at ``r = 1/2`` (order 2) or ``1/3, 2/3``
    (order 3); a last interval ending at sigma = 0 takes one first-order step."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    sched, plan, evals = ctx.schedule, [], 0

    def point(i, r, h):
        t = sched.t_of_lambda(ctx.lam[i] + r * h)
        alpha, sigma = sched.alpha_sigma(t)
        return t, alpha, sigma

    for i in range(ctx.n):
        a0, a1, s1 = ctx.a[i], ctx.a[i + 1], ctx.s[i + 1]
        h = ctx.lam[i + 1] - ctx.lam[i]
        k = 1 if ctx.ends_at_zero(i) else order
        e0 = evals
        first = [a1 / a0, -s1 * np.expm1(h)]  # x_t = a x - sigma_t (e^h - 1) eps_s
        if k == 1 and ctx.ends_at_zero(i):  # e^h = inf: the same step in data prediction
            plan.append(ctx.eval_step(i, "x0", a=0.0, bp=a1))
            evals += 1
            continue
        if k == 1:
            plan.append(ctx.eval_step(i, "eps", a=first[0], bp=first[1]))
            evals += 1
            continue
        r1 = 0.5 if k == 2 else 1 / 3
        t1, al1, si1 = point(i, r1, h)
        # u1 = (alpha_s1/alpha_s) x - sigma_s1 (e^(r1 h) - 1) eps_s
        plan.append(ctx.eval_step(i, "eps", a=al1 / a0, bp=-si1 * np.expm1(r1 * h), save="s"))

        def combine(t, a_s, b_s, g, e0=e0):
            """a_s x_s + b_s eps_s + g (eps(t) - eps_s), with a model call at t."""
            cx, co = ctx.convert(None, "eps", t)
            return Step(
                t=t, cx=cx, co=co, a=0.0, bp=g, operands=[(("state", "s"), a_s), (_pred(e0), b_s - g)]
            )

        if k == 2:
            # x_t = first - sigma_t/(2 r1) (e^h - 1) (eps_1 - eps_s)
            plan.append(combine(t1, first[0], first[1], -s1 / (2 * r1) * np.expm1(h)))
            evals += 2
            continue
        r2 = 2 / 3
        t2, al2, si2 = point(i, r2, h)
        # u2 = (a_s2/a_s) x - s_s2 (e^(r2 h) - 1) eps_s
        #      - s_s2 r2/r1 ((e^(r2 h) - 1)/(r2 h) - 1) (eps_1 - eps_s)
        g = -si2 * r2 / r1 * (np.expm1(r2 * h) / (r2 * h) - 1)
        plan.append(combine(t1, al2 / a0, -si2 * np.expm1(r2 * h), g))
        # x_t = first - sigma_t / r2 ((e^h - 1)/h - 1) (eps_2 - eps_s)
        plan.append(combine(t2, first[0], first[1], -s1 / r2 * (np.expm1(h) / h - 1)))
        evals += 3
    return plan


def heun(
    ctx: Context,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> list[Step]:
    """EDM's second-order Heun sampler (Karras et al. 2022, Algorithm 2) on
    ``dx~/dsigma~ = (x~ - x0) / sigma~`` with ``x~ = x / alpha``, with optional churn
    (noise added to raise sigma~ by ``gamma = min(s_churn / steps, sqrt 2 - 1)`` where
    ``s_tmin <= sigma~ <= s_tmax``); the step to sigma = 0 is Euler's."""
    if (ctx.a == 0).any():
        raise ValueError(
            "heun works on x / alpha and needs alpha > 0 on the grid (for flow schedules "
            "use t_max < 1, or the flow_heun solver)"
        )
    plan = []
    st = ctx.s / ctx.a  # sigma~
    gamma_max = min(s_churn / ctx.n, math.sqrt(2) - 1)
    evals = 0
    for i in range(ctx.n):
        sig, a0 = st[i], ctx.a[i]
        gamma = np.where((sig >= s_tmin) & (sig <= s_tmax), gamma_max, 0.0)
        if s_churn > 0 and (gamma > 0).any():
            hat = sig * (1 + gamma)
            t_hat = ctx.schedule.t_of_sigma_tilde(hat)
            a_hat, _ = ctx.schedule.alpha_sigma(t_hat)
            noise = a_hat * np.sqrt(hat**2 - sig**2) * s_noise
            plan.append(Step(a=a_hat / a0, c=noise))
            cx, co = ctx.convert(None, "x0", t_hat)
        else:
            hat, t_hat, a_hat = sig, ctx.t[i], a0
            cx, co = ctx.convert(i, "x0")
        a1, s1 = ctx.a[i + 1], st[i + 1]
        delta = s1 - hat
        # Euler: x~' = x~ + delta (x~ - x0) / sigma^
        euler = Step(
            t=t_hat, cx=cx, co=co, a=a1 * (1 + delta / hat) / a_hat, bp=-a1 * delta / hat, save="hat"
        )
        plan.append(euler)
        evals += 1
        if ctx.ends_at_zero(i):
            continue
        # x~_t = x~^ + delta/2 ((x~^ - x0)/sigma^ + (x~' - x0')/sigma~_t)
        cx1, co1 = ctx.convert(i + 1, "x0")
        plan.append(
            Step(
                t=ctx.t[i + 1],
                cx=cx1,
                co=co1,
                a=delta / (2 * s1),
                bp=-a1 * delta / (2 * s1),
                operands=[
                    (("state", "hat"), a1 * (1 + delta / (2 * hat)) / a_hat),
                    (_pred(evals - 1), -a1 * delta / (2 * hat)),
                ],
            )
        )
        evals += 1
    return plan


def flow(ctx: Context, method: str = "euler") -> list[Step]:
    """Runge-Kutta in t on ``dx/dt`` (the velocity ``alpha' x0 + sigma' eps``): Euler,
    midpoint or Heun (trapezoid; Euler on a last step to sigma = 0)."""
    if method not in ("euler", "midpoint", "heun"):
        raise ValueError(f"method must be 'euler', 'midpoint' or 'heun', got {method!r}")
    plan, evals = [], 0
    for i in range(ctx.n):
        h = ctx.t[i + 1] - ctx.t[i]
        if method == "euler" or (method == "heun" and ctx.ends_at_zero(i)):
            plan.append(ctx.eval_step(i, "velocity", a=1.0, bp=h))
            evals += 1
        elif method == "midpoint":
            plan.append(ctx.eval_step(i, "velocity", a=1.0, bp=h / 2, save="s"))
            tm = ctx.t[i] + h / 2
            cx, co = ctx.convert(None, "velocity", tm)
            plan.append(Step(t=tm, cx=cx, co=co, a=0.0, bp=h, operands=[(("state", "s"), 1.0)]))
            evals += 2
        else:
            plan.append(ctx.eval_step(i, "velocity", a=1.0, bp=h, save="s"))
            cx, co = ctx.convert(i + 1, "velocity")
            plan.append(
                Step(
                    t=ctx.t[i + 1],
                    cx=cx,
                    co=co,
                    a=0.0,
                    bp=h / 2,
                    operands=[(("state", "s"), 1.0), (_pred(evals), h / 2)],
                )
            )
            evals += 2
    return plan


def deis(ctx: Context, order: int = 2, lower_order_final: bool = True) -> list[Step]:
    """DEIS (Zhang & Chen 2023), time-AB in ``rho = sigma / alpha`` ("logrho"), noise
    prediction: the exponential integrator with a Lagrange polynomial through the last
    ``order`` noise predictions, integrated in closed form."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    rho, plan = ctx.s / ctx.a, []
    for i in range(ctx.n):
        a0, a1, s1 = ctx.a[i], ctx.a[i + 1], ctx.s[i + 1]
        if ctx.ends_at_zero(i):  # rho_t = 0: the data prediction (the polynomial's value)
            plan.append(ctx.eval_step(i, "x0", a=0.0, bp=a1))
            continue
        k = _multistep_order(i, ctx.n, order, lower_order_final)
        if k == 1:
            h = ctx.lam[i + 1] - ctx.lam[i]
            plan.append(ctx.eval_step(i, "eps", a=a1 / a0, bp=-s1 * np.expm1(h)))
            continue
        lt, l0, l1 = np.log(rho[i + 1]), np.log(rho[i]), np.log(rho[i - 1])
        if k == 2:

            def ind(t, b, c):  # integral of rho' times the Lagrange basis through (b, c)
                return np.exp(t) * (-c + t - 1) / (b - c)

            coefs = [ind(lt, l0, l1) - ind(l0, l0, l1), ind(lt, l1, l0) - ind(l0, l1, l0)]
        else:
            l2 = np.log(rho[i - 2])

            def ind(t, b, c, d):
                num = np.exp(t) * (c * (d - t + 1) - d * t + d + t**2 - 2 * t + 2)
                return num / ((b - c) * (b - d))

            coefs = [
                ind(lt, l0, l1, l2) - ind(l0, l0, l1, l2),
                ind(lt, l1, l2, l0) - ind(l0, l1, l2, l0),
                ind(lt, l2, l0, l1) - ind(l0, l2, l0, l1),
            ]
        ops = [(_pred(i - j), a1 * coefs[j]) for j in range(1, k)]
        plan.append(ctx.eval_step(i, "eps", a=a1 / a0, bp=a1 * coefs[0], operands=ops))
    return plan


def _unipc_rhos(rks: list, hh: np.ndarray, b_h: np.ndarray, p: int, corrector: bool) -> list:
    """UniPC's rho coefficients (Zhao et al. 2023, Algorithm 2/3, as diffusers solves
    them): ``rks`` ``[p - 1]`` ratios of the earlier steps, ``[B]`` arrays each."""
    h_phi_k, fact, r_rows, b = np.expm1(hh) / hh - 1, 1, [], []
    rk = list(rks) + [np.ones_like(hh)]
    for j in range(1, p + 1):
        r_rows.append([r ** (j - 1) for r in rk])
        b.append(h_phi_k * fact / b_h)
        fact *= j + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    if corrector:
        if p == 1:
            return [np.full_like(hh, 0.5)]
        size = p
    else:
        if p == 1:
            return []
        if p == 2:
            return [np.full_like(hh, 0.5)]
        size = p - 1
    # One small solve per sample (the grid may differ across samples).
    r = np.stack([np.stack(row[:size], -1) for row in r_rows[:size]], -2)  # [B, size, size]
    return list(np.linalg.solve(r, np.stack(b[:size], -1)[..., None])[..., 0].T)


def unipc(
    ctx: Context,
    order: int = 2,
    variant: str = "bh2",
    lower_order_final: bool = True,
    disable_corrector: tuple[int, ...] = (),
) -> list[Step]:
    """UniPC (Zhao et al. 2023): UniP predictor of ``order`` plus the UniC corrector
    (which reuses the model call at the new point, so it costs no NFE), data prediction,
    ``B(h) = h`` (bh1) or ``e^h - 1`` (bh2). Each model call is one fused corrector
    update and one predictor update."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    lam, a, s, plan = ctx.lam, ctx.a, ctx.s, []

    def coefficients(i, p, corrector):
        """x_(i+1) = a x_i + c0 m_i + sum_k c_k m_(i-k) (+ c_new m_(i+1) for the corrector)."""
        h = lam[i + 1] - lam[i]
        hh = -h
        b_h = hh if variant == "bh1" else np.expm1(hh)
        rks = [(lam[i - k] - lam[i]) / h for k in range(1, p)]
        rhos = _unipc_rhos(rks, hh, b_h, p, corrector)
        c0 = -a[i + 1] * np.expm1(hh)
        older = []
        for k in range(1, p):  # D1_k = (m_(i-k) - m_i) / r_k
            g = -a[i + 1] * b_h * rhos[k - 1] / rks[k - 1]
            older.append(g)
            c0 = c0 - g
        new = None
        if corrector:  # + rho_last (m_(i+1) - m_i)
            new = -a[i + 1] * b_h * rhos[-1]
            c0 = c0 - new
        return s[i + 1] / s[i], c0, older, new

    p_prev = None
    for i in range(ctx.n):
        p = min(order, i + 1)
        if lower_order_final:
            p = min(p, ctx.n - i)
        if p_prev is not None and (i - 1) not in disable_corrector:
            # Corrector of step i - 1, at point i, with this call's prediction as m_(i).
            ax, c0, older, new = coefficients(i - 1, p_prev, corrector=True)
            ops = [(("state", "last"), ax), (_pred(i - 1), c0)] + [
                (_pred(i - 1 - k), g) for k, g in enumerate(older, 1)
            ]
            plan.append(ctx.eval_step(i, "x0", a=0.0, bp=new, operands=ops))
            ax, c0, older, _ = coefficients(i, p, corrector=False)
            ops = [(_pred(i), c0)] + [(_pred(i - k), g) for k, g in enumerate(older, 1)]
            plan.append(Step(a=ax, operands=ops, save="last"))
        else:
            ax, c0, older, _ = coefficients(i, p, corrector=False)
            ops = [(_pred(i - k), g) for k, g in enumerate(older, 1)]
            plan.append(ctx.eval_step(i, "x0", a=ax, bp=c0, operands=ops, save="last"))
        p_prev = p
    return plan
