"""The mean-field limit: the conditional law ``mu_t`` of the tokens given the common noise (pure; no files, no CLI).

:mod:`tokensde.meanfield.circle` solves it on ``S^1`` for models A and C (Eulerian spectral density and Lagrangian
quantile particles, one Wong–Zakai scheme); :mod:`tokensde.meanfield.sphere2` on ``S^2`` for model C (a
spherical-harmonic density and particles); :mod:`tokensde.meanfield.spheres` on any ``S^{d-1}`` (a deterministic
quantisation pushed forward by the engine). All run through :mod:`tokensde.engine` on a
:class:`~tokensde.engine.BrownianPath`. The equations and schemes: docs/meanfield.md.
"""
