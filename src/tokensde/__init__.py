r"""tokensde: token dynamics of deep random Transformers as SDEs on the sphere.

``import tokensde as tsd`` gives the whole public surface as one flat namespace.
Names are resolved lazily (PEP 562): ``import tokensde`` imports nothing heavy,
and ``tsd.ValueNoise`` imports :mod:`tokensde.models` on first use. Every name is
also importable from the module that defines it (given in brackets).

Example: two tokens of model A at overlap 0, their final state and its metrics.

>>> import torch
>>> import tokensde as tsd
>>> x0 = tsd.pair_with_overlap(8, 4, 0.0, generator=torch.Generator().manual_seed(0))
>>> x = tsd.simulate(tsd.ValueNoise(beta=2.0), x0, dt=0.05, steps=40, seed=0).x
>>> tuple(x.shape)
(8, 2, 4)
>>> round(tsd.p_antipodal(4, 2.0), 4)  # the exact exit law of the overlap
0.2474

Models [tokensde.models]
    ValueNoise        model A: random value matrices, stack and limit SDE
    Multihead         model B: random multi-head attention stack
    MultiheadLimit    model B: diffusive SDE, ballistic and modified ODE limits
    MLPNoise          model C: fixed attention, random MLP blocks
    KernelModel       a model given by a drift and a common-noise kernel [models.kernel]
    load_model        build a model from "MODULE:FACTORY" (runs that code) [models.kernel]
    Model             base class of the model contract: drift, kernel, noise [models.base]
    check_model       validate a model for an integration [models.base]

Engine [tokensde.engine, tokensde.solvers]
    integrate         integrate a model on a Brownian path: the one stepping loop [engine]
    integrate_runs    several runs (models, solvers, step ratios) on one path [engine]
    BrownianPath      the normals driving the systems; .coarsen(r) for steps r dt [engine]
    Run               one run of integrate_runs: model, solver, ratio [engine]
    Hooks             retire, observe, progress inside the loop [engine]
    Solution          the result of ``integrate``: final states, saved states, times [engine]
    simulate          integrate with a path made from (seed, key) [solvers]
    EulerMaruyama     projected Ito Euler-Maruyama (strong 1/2, weak 1) [solvers]
    StratonovichHeun  stochastic Heun on the Stratonovich form [solvers]
    Stack             the discrete random stack itself [solvers]

Initial states [tokensde.sphere]
    uniform           i.i.d. uniform points on S^{d-1}, shape (*shape, d)
    pair_with_overlap uniformly rotated pairs with <x_1, x_2> = rho, (B, 2, d)
    simplex           n <= d unit vectors with common overlap gamma, (n, d)

Theory, model A [tokensde.theory.value_noise]
    beta_c                  threshold arccosh(d - 2)/2 of antipodal attraction
    p_antipodal             exact exit law P(rho -> -1 | rho_0)
    exponent_collapse       rate of log|x_1 - x_2| at collapse
    exponent_antipodal      rate of log|x_1 + x_2| at the antipode
    antipodal_attracting    cosh(2 beta) > d - 2
    value_noise_two_point   the overlap diffusion as a TwoPointMotion

Theory, generic two-point motion [tokensde.theory.two_point]
    TwoPointMotion    overlap diffusion for a symmetric kernel: exit law, exponents
    BoundaryRates     its linearisation at one boundary

Theory, model B [tokensde.theory.homogenized]
    logistic_overlap     mean overlap u_0 e^tau / (1 - u_0 + u_0 e^tau)
    logistic_exit_plus   P(u -> +1) = arcsin(u_0)/pi + 1/2
    logistic_two_point   tokens attending to themselves, as a TwoPointMotion
    simplex_fg           Monte-Carlo f, g of the simplex comparison ODE
    simplex_overlap      the simplex comparison ODE
    half_time            time for the simplex overlap to reach 1/2
    SimplexRates         f, g on a grid with standard errors

Theory, model C [tokensde.theory.synchronization]
    mlp_kernel        the cached kernel kappa of an MLP law (``kernel``)
    kappa             kappa(u) = E[phi(z_1) phi(z_2)] + sigma_W^2
    kappa_prime       kappa'(u) (Price's theorem)
    lambda_1          distance exponent at collapse
    lambda_bar        coercivity constant
    lambda_bar_prime  energy decay rate
    sync_constants    all constants at once (``constants``)
    SyncConstants     their record
    mlp_two_point     the overlap diffusion as a TwoPointMotion (``two_point_motion``)

Metrics [tokensde.metrics]
    summary             every metric per system, in one pass
    cluster_labels      components of <x_i, x_j> > 1 - eps, (B, n)
    n_clusters          number of clusters, (B,)
    is_collapsed        one cluster, (B,)
    is_antipodal        two antipodal clusters, (B,)
    interaction_energy  E_beta(X), (B,)
    overlap_stats       mean, min and max overlap, (B,) each
    effective_rank      exp of the entropy of the Gram spectrum, (B,)

Experiments [tokensde.experiments, tokensde.runtime]
    run_experiment         run an experiment into a run directory [runtime]
    REGISTRY               the catalogue, name -> Experiment [experiments]
    available_experiments  the catalogue plus $TOKENSDE_EXPERIMENTS [experiments.registry]

The subpackages and modules (``tsd.metrics``, ``tsd.theory``, ...) are imported on
first attribute access too. The mathematics is in docs/models.md.
"""

TYPE_CHECKING = False  # typing costs ~8 ms to import; mypy treats this name as True
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

#: public name -> "module:attribute" (the module is imported on first access)
_LAZY = {
    # models
    "ValueNoise": "tokensde.models:ValueNoise",
    "Multihead": "tokensde.models:Multihead",
    "MultiheadLimit": "tokensde.models:MultiheadLimit",
    "MLPNoise": "tokensde.models:MLPNoise",
    "KernelModel": "tokensde.models.kernel:KernelModel",
    "load_model": "tokensde.models.kernel:load_model",
    "Model": "tokensde.models.base:Model",
    "check_model": "tokensde.models.base:check_model",
    # engine
    "integrate": "tokensde.engine:integrate",
    "integrate_runs": "tokensde.engine:integrate_runs",
    "Run": "tokensde.engine:Run",
    "Hooks": "tokensde.engine:Hooks",
    "BrownianPath": "tokensde.engine:BrownianPath",
    "Solution": "tokensde.engine:Solution",
    "simulate": "tokensde.solvers:simulate",
    "EulerMaruyama": "tokensde.solvers:EulerMaruyama",
    "StratonovichHeun": "tokensde.solvers:StratonovichHeun",
    "Stack": "tokensde.solvers:Stack",
    # initial states
    "uniform": "tokensde.sphere:uniform",
    "pair_with_overlap": "tokensde.sphere:pair_with_overlap",
    "simplex": "tokensde.sphere:simplex",
    # theory, model A
    "beta_c": "tokensde.theory.value_noise:beta_c",
    "p_antipodal": "tokensde.theory.value_noise:p_antipodal",
    "exponent_collapse": "tokensde.theory.value_noise:exponent_collapse",
    "exponent_antipodal": "tokensde.theory.value_noise:exponent_antipodal",
    "antipodal_attracting": "tokensde.theory.value_noise:antipodal_attracting",
    "value_noise_two_point": "tokensde.theory.value_noise:two_point_motion",
    # theory, generic two-point motion
    "TwoPointMotion": "tokensde.theory.two_point:TwoPointMotion",
    "BoundaryRates": "tokensde.theory.two_point:BoundaryRates",
    # theory, model B
    "logistic_overlap": "tokensde.theory.homogenized:logistic_overlap",
    "logistic_exit_plus": "tokensde.theory.homogenized:logistic_exit_plus",
    "logistic_two_point": "tokensde.theory.homogenized:logistic_two_point",
    "simplex_fg": "tokensde.theory.homogenized:simplex_fg",
    "simplex_overlap": "tokensde.theory.homogenized:simplex_overlap",
    "half_time": "tokensde.theory.homogenized:half_time",
    "SimplexRates": "tokensde.theory.homogenized:SimplexRates",
    # theory, model C
    "mlp_kernel": "tokensde.theory.synchronization:kernel",
    "kappa": "tokensde.theory.synchronization:kappa",
    "kappa_prime": "tokensde.theory.synchronization:kappa_prime",
    "lambda_1": "tokensde.theory.synchronization:lambda_1",
    "lambda_bar": "tokensde.theory.synchronization:lambda_bar",
    "lambda_bar_prime": "tokensde.theory.synchronization:lambda_bar_prime",
    "sync_constants": "tokensde.theory.synchronization:constants",
    "SyncConstants": "tokensde.theory.synchronization:SyncConstants",
    "mlp_two_point": "tokensde.theory.synchronization:two_point_motion",
    # metrics
    "summary": "tokensde.metrics:summary",
    "cluster_labels": "tokensde.metrics:cluster_labels",
    "n_clusters": "tokensde.metrics:n_clusters",
    "is_collapsed": "tokensde.metrics:is_collapsed",
    "is_antipodal": "tokensde.metrics:is_antipodal",
    "interaction_energy": "tokensde.metrics:interaction_energy",
    "overlap_stats": "tokensde.metrics:overlap_stats",
    "effective_rank": "tokensde.metrics:effective_rank",
    # experiments
    "run_experiment": "tokensde.runtime:run_experiment",
    "REGISTRY": "tokensde.experiments:REGISTRY",
    "available_experiments": "tokensde.experiments.registry:available_experiments",
}

#: modules reachable as attributes (``tsd.metrics``) without an explicit import
_SUBMODULES = frozenset(
    {
        "activations",
        "attention",
        "engine",
        "errors",
        "experiments",
        "files",
        "laws",
        "metrics",
        "models",
        "nn",
        "noise",
        "report",
        "runtime",
        "sizes",
        "solvers",
        "sphere",
        "stats",
        "theory",
    }
)

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> "Any":
    import importlib  # here rather than at the top: ``import tokensde`` stays minimal

    target = _LAZY.get(name)
    if target is None:
        if name in _SUBMODULES:
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name + ".").startswith(e.name + "."):  # the module itself is missing
            raise AttributeError(f"module {__name__!r} has no attribute {name!r} ({module_name} not found)") from e
        raise
    try:
        value = getattr(module, attr)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r} ({target} not found)") from None
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
