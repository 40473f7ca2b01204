"""Command-line interface (thin): parse, validate, call the library, print."""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Token dynamics of deep random Transformers as SDEs on the sphere."
)
theory_app = typer.Typer(no_args_is_help=True, help="Closed forms and numerics that need no simulation.")
app.add_typer(theory_app, name="theory")
console = Console()
err = Console(stderr=True)


def _exit(line: str, code: int) -> NoReturn:
    """``line`` (its line breaks joined by spaces) on stderr, exit status ``code``."""
    err.print(" ".join(line.splitlines()), markup=False, highlight=False, emoji=False, soft_wrap=True)
    raise typer.Exit(code)


def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 2."""
    _exit(f"error: {message}", 2)


#: a config file is a small TOML document; anything larger is refused before it is parsed
CONFIG_MAX_BYTES = 1 << 20
ISSUES_HINT = "this is a bug in tokensde: please report it with the command line and the output of TOKENSDE_DEBUG=1"

F = TypeVar("F", bound=Callable[..., Any])


def guarded(command: F) -> F:
    """The CLI boundary of a command: every failure ends in one line on stderr and an exit status.

    * :class:`~tokensde.errors.UsageError` (bad config, ``--out``, memory estimate): its line, exit 2;
    * ``OSError`` (a disk full, a file that vanished), ``MemoryError``, ``RecursionError``: one line, exit 1;
    * anything else is a bug: one line saying so, exit 1 (``TOKENSDE_DEBUG=1`` re-raises for the traceback).

    ``typer.Exit`` / ``SystemExit`` and ``KeyboardInterrupt`` pass through (they carry their own status).
    """
    from .errors import UsageError

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
            raise
        except UsageError as e:
            fail(str(e))
        except Exception as e:  # noqa: BLE001 - the boundary: one line, never a traceback
            if os.environ.get("TOKENSDE_DEBUG"):
                raise
            if isinstance(e, MemoryError):
                _exit("error: out of memory: the machine could not allocate what this run needs;"
                      " reduce the sizes in the config or use fewer --workers", 1)  # fmt: skip
            if isinstance(e, OSError):
                where = f" {e.filename}" if e.filename else ""
                _exit(f"error: cannot read or write{where}: {e.strerror or e}", 1)
            if isinstance(e, RecursionError):
                _exit("error: input nested too deeply (recursion limit reached)", 1)
            _exit(f"internal error: {type(e).__name__}: {e} -- {ISSUES_HINT}", 1)

    return wrapper  # type: ignore[return-value]


def read_config(path: Path) -> dict[str, Any]:
    """The TOML document at ``path`` as a dict, or exit 2 with one line (unreadable, too large, not TOML)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(CONFIG_MAX_BYTES + 1)
    except OSError as e:
        fail(f"config: cannot read {path}: {e.strerror or e}")
    if len(raw) > CONFIG_MAX_BYTES:
        fail(f"config: {path} is larger than {CONFIG_MAX_BYTES >> 20} MiB; a config is a small TOML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"config: {path} is not UTF-8 text (TOML files are UTF-8)")
    try:
        return tomllib.loads(text)
    except RecursionError:
        fail(f"config: {path} is nested too deeply to be a config")
    except (tomllib.TOMLDecodeError, ValueError) as e:
        fail(f"config: {path} is not valid TOML: {e}")


def out_path(raw: str | None, default: Path) -> Path:
    """``--out`` as a path; exit 2 for an empty string (it would mean the current directory)."""
    if raw is None:
        return default
    if not raw.strip():
        fail(f"out: must be a directory path, got {raw!r} (use --out . to mean the current directory)")
    return Path(raw)


def _describe(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    field = model.model_fields.get(str(loc[0])) if loc else None
    return f" (allowed: {field.description})" if field is not None and field.description else ""


def validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """Validate ``data`` or exit 2 with one line naming the field and the allowed range."""
    try:
        return model(**data)
    except (ValidationError, ArithmeticError, TypeError, ValueError) as e:  # also what a validator lets escape
        from .experiments.schema import error_line

        fail(error_line(model, e, data))


def _device(device: str) -> str:
    import torch

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        fail(f"device: must be cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("device: cuda requested but torch.cuda.is_available() is False")
    return device


@app.command("list")
@guarded
def list_experiments() -> None:
    """List the registered experiments (the catalogue and those named in $TOKENSDE_EXPERIMENTS)."""
    from .experiments.registry import available_experiments

    registry = available_experiments()
    table = Table("name", "what it shows")
    for name, exp in registry.items():
        table.add_row(name, exp.summary)
    console.print(table)


@app.command()
@guarded
def report(
    dirs: Annotated[list[Path], typer.Argument(help="run directories (one: rebuild its report; several: compare)")],
    out: Annotated[
        str | None, typer.Option("--out", help="comparison page (default: compare.html beside the first run)")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="overwrite the target even if it is not a report of tokensde")
    ] = False,
) -> None:
    """Rebuild the offline HTML report of a run, or compare several runs side by side.

    The page written replaces only a report of tokensde: an existing file that is not one
    (or a directory) is refused unless --force.
    """
    from .report import build_report, compare_reports
    from .report.html import load_run
    from .runtime.store import RunStore

    for d in dirs:
        try:
            for warning in load_run(d)["warnings"]:
                err.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
        except FileNotFoundError as e:
            fail(f"dirs: {e}")
        except (OSError, ValueError) as e:
            fail(f"dirs: {d} cannot be read: {e}")
    if len(dirs) == 1 and out is None:
        with RunStore(dirs[0]).locked():
            path = build_report(dirs[0], force=force)
    else:
        target = out_path(out, dirs[0].parent / "compare.html")
        path = compare_reports(dirs, target, force=force)
    console.print(f"report -> {path}")


@app.command(add_help_option=False)
@guarded
def run(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="experiment name (see `tokensde list`)")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML file with config keys")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="small version for CI and laptops")] = False,
    out: Annotated[
        str | None,
        typer.Option("--out", help="run directory (default runs/NAME): new, empty, or this run's to resume"),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="write into a non-empty --out that holds no tokensde run (never another run)"),
    ] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="base seed (overrides the config)")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda")] = "cpu",
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="serial, local (spawned processes) or ray; default: local, serial on CUDA or for one unit",
        ),
    ] = None,
    workers: Annotated[
        str | None,
        typer.Option(
            "--workers",
            help="local: processes (default one per core, at most the units to run); ray: tasks in flight"
            " (default all)",
        ),
    ] = None,
    threads: Annotated[
        str,
        typer.Option(
            "--threads",
            help="threads per unit (torch and kernels): auto (default: the cores shared among the units running"
            " at once: serial all, local cores // workers, ray 1) or an integer; fix it for tables byte-identical"
            " across executors, machines and resumes",
        ),
    ] = "auto",
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="join this Ray cluster (implies --executor ray); default: a local instance"),
    ] = None,
    show_help: Annotated[
        bool, typer.Option("--help", "-h", help="show this help and, with NAME, the experiment's config keys")
    ] = False,
) -> None:
    """Run an experiment; re-running with the same --out resumes.

    Units run serially, in local processes or as Ray tasks (--executor); each unit runs
    with --threads threads (auto by default: the cores shared among the units running at
    once) and its own derived seeds. With a fixed --threads N the results are bitwise the
    same whatever the executor, the number of workers and any interruption. SIGINT or
    SIGTERM stops cleanly (exit 130 / 143): finished units stay in --out and the same
    command resumes. --out must be new, empty or a run of the same experiment and config;
    one process writes it at a time. Experiments outside the catalogue: see
    $TOKENSDE_EXPERIMENTS (importing them runs their code, with the trust of PYTHONPATH).
    """
    from .experiments.registry import available_experiments
    from .runtime import run_experiment
    from .runtime.executors import EXECUTORS, MAX_COUNT, ExecutorOptions, default_executor, parse_threads

    registry = available_experiments()
    if show_help:
        from .experiments.schema import help_text

        typer.echo(ctx.get_help())
        if name is not None and name in registry:
            typer.echo("\n" + help_text(registry[name]))
        elif name is not None:
            fail(f"name: unknown experiment {name!r} (allowed: {', '.join(registry)})")
        raise typer.Exit(0)
    if name is None:
        fail(f"name: missing experiment name (allowed: {', '.join(registry)})")
    if name not in registry:
        fail(f"name: unknown experiment {name!r} (allowed: {', '.join(registry)})")
    exp = registry[name]
    if executor is not None and executor not in EXECUTORS:
        fail(f"executor: must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    n_workers: int | None = None
    if workers is not None:
        try:
            n_workers = int(workers)
        except ValueError:
            n_workers = 0
        if not 1 <= n_workers <= MAX_COUNT:
            fail(f"workers: must be an integer in [1, {MAX_COUNT}], got {workers!r}")
    try:
        n_threads = parse_threads(threads)
    except ValueError as e:
        fail(str(e))
    if ray_address is not None:
        if not ray_address.strip():
            fail("ray-address: must be a Ray address such as HOST:6379 or ray://HOST:10001, got ''")
        if executor not in (None, "ray"):
            fail(f"ray-address: only with --executor ray, got --executor {executor}")
        executor = "ray"
    data: dict[str, Any] = dict(exp.quick) if quick else {}
    if config is not None:
        data.update(read_config(config))
    if seed is not None:
        data["seed"] = seed
    cfg = validate(exp.Config, data)
    dev = _device(device)
    out_dir = out_path(out, Path("runs") / name)
    options = ExecutorOptions(
        kind=executor or default_executor(dev, units=len(exp.plan(cfg))),
        workers=n_workers,
        threads=n_threads,
        ray_address=ray_address,
    )
    t0 = time.time()
    try:
        verdict = run_experiment(exp, cfg, out_dir, dev, show_progress=progress, executor=options, force=force)
    except ConnectionError as e:
        fail(
            f"ray-address: cannot join the Ray cluster at {ray_address}: {e}"
            " (a cluster with token authentication needs RAY_AUTH_MODE=token)"
        )
    except KeyboardInterrupt as e:
        code = getattr(e, "exit_code", 130)
        finished, total = getattr(e, "finished", None), getattr(e, "total", None)
        kept = "finished units" if finished is None else f"{finished} of {total} units"
        err.print(
            f"interrupted ({'SIGTERM' if code == 143 else 'SIGINT'}): {kept} kept in {out_dir};"
            " run the same command to resume",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code) from None
    for c in verdict["checks"]:
        mark = "[green]ok[/green]" if c["passed"] else "[red]FAIL[/red]"
        console.print(f"{mark} {c['name']}: {c['detail']}")
    for note in verdict.get("notes", []):
        console.print(f"[dim]note[/dim] {note}", markup=True, highlight=False)
    colour = "green" if verdict["verdict"] == "PASS" else "red"
    console.print(
        f"[bold {colour}]{verdict['verdict']}[/bold {colour}] {name} in {time.time() - t0:.1f} s -> {out_dir}"
    )


class SimulateArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    model: Literal["value-noise"] = Field(description="value-noise")
    n: int = Field(ge=1, le=10_000_000, description="integer in [1, 1e7]")
    d: int = Field(ge=2, le=65_536, description="integer in [2, 65536]")
    beta: float = Field(ge=0.0, le=1e4, description="number in [0, 1e4]")
    sigma: float = Field(ge=0.0, le=1e3, description="number in [0, 1e3]")
    steps: int = Field(ge=1, le=10_000_000, description="integer in [1, 1e7]")
    dt: float = Field(gt=0.0, le=1.0, description="number in (0, 1]")
    systems: int = Field(ge=1, le=10_000_000, description="integer in [1, 1e7]")
    seed: int = Field(ge=0, le=2**63 - 1, description="integer in [0, 2^63)")
    solver: Literal["euler", "stack"] = Field(description="euler or stack")
    route: Literal["auto", "matrix", "kernel"] = Field(description="auto, matrix or kernel")
    dtype: Literal["float32", "float64"] = Field(description="float32 or float64")


@app.command()
@guarded
def simulate(
    out: Annotated[
        str, typer.Option("--out", help="output directory: new, empty, or an earlier simulate of this config")
    ],
    model: Annotated[str, typer.Option("--model", help="value-noise")] = "value-noise",
    n: Annotated[int, typer.Option("--n", help="tokens per system")] = 32,
    d: Annotated[int, typer.Option("--d", help="dimension")] = 8,
    beta: Annotated[float, typer.Option("--beta", help="inverse temperature")] = 1.0,
    sigma: Annotated[float, typer.Option("--sigma", help="noise scale")] = 1.0,
    steps: Annotated[int, typer.Option("--steps", help="number of steps (layers)")] = 1000,
    dt: Annotated[float, typer.Option("--dt", help="time step h")] = 0.01,
    systems: Annotated[int, typer.Option("--systems", help="independent systems")] = 1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    solver: Annotated[str, typer.Option("--solver", help="euler (limit SDE) or stack (discrete layers)")] = "euler",
    route: Annotated[str, typer.Option("--route", help="noise route of the limit")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype")] = "float32",
    device: Annotated[str, typer.Option("--device")] = "cpu",
    force: Annotated[
        bool, typer.Option("--force", help="write into a non-empty --out that holds no tokensde output")
    ] = False,
) -> None:
    """Ad-hoc simulation from uniform tokens: saves final states (NPZ) and summary metrics (JSON).

    The memory the simulation needs is estimated first and compared with what is free.
    """
    args = validate(
        SimulateArgs,
        dict(
            model=model,
            n=n,
            d=d,
            beta=beta,
            sigma=sigma,
            steps=steps,
            dt=dt,
            systems=systems,
            seed=seed,
            solver=solver,
            route=route,
            dtype=dtype,
        ),
    )
    dev = _device(device)
    out_dir = out_path(out, Path("."))
    from .runtime.simulate import simulate_run

    summary = simulate_run(out_dir, **args.model_dump(), device=dev, force=force)
    elapsed = summary["elapsed_s"]
    console.print(
        f"simulated {args.systems} x {args.n} tokens in d = {args.d} for {args.steps} steps in {elapsed:.2f} s"
        f" ({elapsed / args.steps:.3g} s/step, metrics {summary['metrics_s']:.2f} s,"
        f" peak RSS {summary['peak_rss_bytes'] / 2**20:.0f} MiB) -> {out_dir}"
    )


class TwoPointArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    model: Literal["value-noise"] = Field(description="value-noise")
    d: int = Field(ge=2, le=100_000, description="integer in [2, 1e5]")
    beta: float = Field(ge=0.0, le=1e3, description="number in [0, 1e3]")
    rho0: float = Field(ge=-1.0, le=1.0, description="number in [-1, 1]")
    sigma: float = Field(gt=0.0, le=1e3, description="number in (0, 1e3]")


@theory_app.command("two-point")
@guarded
def two_point(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="value-noise (model A), or MODULE:FACTORY, a model of your own: MODULE is imported and FACTORY "
            "called, which runs their code (trust them as you trust PYTHONPATH)",
        ),
    ] = "value-noise",
    d: Annotated[int, typer.Option("--d")] = 4,
    beta: Annotated[float, typer.Option("--beta", help="value-noise only")] = 1.0,
    rho0: Annotated[float, typer.Option("--rho0")] = 0.0,
    sigma: Annotated[float, typer.Option("--sigma", help="value-noise only")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Exit law and boundary exponents of the two-token overlap diffusion.

    --model MODULE:FACTORY takes a model of your own (e.g. a tokensde.models.KernelModel, or any object with a
    two_point(d) method; docs/models.md, "Bring your own model"). This imports MODULE and calls FACTORY(): it
    executes their code, with the same trust as PYTHONPATH. Its parameters are the factory's (no --beta, --sigma).
    """
    if ":" not in model:  # a built-in model
        if model != "value-noise":
            fail(f"--model: must be value-noise or MODULE:FACTORY (a model of your own), got {model!r}")
        args = validate(TwoPointArgs, dict(model=model, d=d, beta=beta, rho0=rho0, sigma=sigma))
        from .theory import value_noise as A

        motion = A.two_point_motion(args.d, args.beta, args.sigma)
        res = {
            "model": args.model,
            "d": args.d,
            "beta": args.beta,
            "rho0": args.rho0,
            "sigma": args.sigma,
            "beta_c": A.beta_c(args.d),
            "p_antipodal": motion.p_antipodal(args.rho0),
            "exponent_collapse": motion.exponent_collapse,
            "exponent_antipodal": motion.exponent_antipodal,
        }
    else:  # MODULE:FACTORY: a user model (this imports and runs its code)
        for flag, name in (("--beta", "beta"), ("--sigma", "sigma")):  # given, not defaulted: refused
            if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP"):
                fail(f"{flag}: applies to --model value-noise only; a MODULE:FACTORY model takes its parameters "
                     "from its factory")  # fmt: skip
        args = validate(TwoPointArgs, dict(model="value-noise", d=d, beta=1.0, rho0=rho0, sigma=1.0))
        from .models import load_model

        user = load_model(model, what="--model")  # UsageError naming --model: one line, exit 2
        make = getattr(user, "two_point", None)
        if not callable(make):
            fail(f"--model: {model!r} gives a {type(user).__name__} without a two_point(d) method "
                 "(wrap a kernel in tokensde.models.KernelModel)")  # fmt: skip
        try:
            motion = make(args.d)
            res = {
                "model": model,
                "d": args.d,
                "rho0": args.rho0,
                "p_antipodal": float(motion.p_antipodal(args.rho0)),
                "exponent_collapse": float(motion.exponent_collapse),
                "exponent_antipodal": float(motion.exponent_antipodal),
            }
        except Exception as e:  # noqa: BLE001 - the user's model failed or broke an assumption: their input
            fail(f"--model: {model!r} in d = {args.d}: {type(e).__name__}: {e}")
        # a user kernel may leave the antipode non-absorbing: its exponent is then undefined (null, not NaN)
        res = {k: None if isinstance(v, float) and v != v else v for k, v in res.items()}
    if as_json:
        sys.stdout.write(json.dumps(res, allow_nan=False) + "\n")  # strict JSON: a NaN is a bug, not output
        return
    for k, v in res.items():
        console.print(f"{k:>20}: {v}")


class SyncArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    activation: Literal["relu", "tanh", "silu", "sigmoid", "gelu"] = Field(
        description="relu, tanh, silu, sigmoid or gelu"
    )
    d: int = Field(ge=2, le=100_000, description="integer in [2, 1e5]")
    sigma_u: float = Field(ge=0.0, le=1.0, description="number in [0, 1]")
    sigma_w: float = Field(ge=0.0, le=100.0, description="number in [0, 100]")
    beta: float = Field(ge=0.0, le=1e3, description="number in [0, 1e3]")


@theory_app.command("sync")
@guarded
def sync(
    activation: Annotated[str, typer.Option("--activation", help="relu, tanh, silu, sigmoid or gelu")] = "relu",
    d: Annotated[int, typer.Option("--d", help="dimension")] = 4,
    sigma_u: Annotated[float, typer.Option("--sigma-u", help="std of the bias b_U")] = 0.0,
    sigma_w: Annotated[float, typer.Option("--sigma-w", help="std of the bias b_W")] = 0.0,
    beta: Annotated[float, typer.Option("--beta", help="inverse temperature (for lambda_bar')")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Model C: kappa(1), kappa'(1), lambda_1, lambda_bar and lambda_bar' of a random-MLP law."""
    args = validate(SyncArgs, dict(activation=activation, d=d, sigma_u=sigma_u, sigma_w=sigma_w, beta=beta))
    from .theory import synchronization as C

    consts = C.constants(args.activation, args.d, args.sigma_u, args.sigma_w, args.beta)
    res = {
        "model": "mlp-noise",
        **args.model_dump(),
        **dataclasses.asdict(consts),
        "odd_field": C.is_odd(args.activation, args.sigma_u, args.sigma_w),
    }
    if as_json:
        sys.stdout.write(json.dumps(res, allow_nan=False) + "\n")  # strict JSON: a NaN is a bug, not output
        return
    for key, v in res.items():
        console.print(f"{key:>20}: {v}")


@app.command("schema")
@guarded
def schema(
    name: Annotated[str | None, typer.Argument(help="experiment name (default: all)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="text (as run NAME --help), markdown or json")] = "text",
) -> None:
    """Print the config keys of an experiment: types, defaults, allowed ranges (text, Markdown or JSON Schema).

    Covers the catalogue and the experiments named in $TOKENSDE_EXPERIMENTS.
    """
    from .experiments import schema as sch
    from .experiments.registry import available_experiments

    if fmt not in ("text", "markdown", "json"):
        fail(f"format: must be text, markdown or json, got {fmt!r}")
    registry = available_experiments()
    if name is not None and name not in registry:
        fail(f"name: unknown experiment {name!r} (allowed: {', '.join(registry)})")
    exps = [registry[name]] if name is not None else list(registry.values())
    if fmt == "json":
        schemas = {e.name: sch.json_schema(e) for e in exps}
        text = json.dumps(schemas[name] if name is not None else schemas, indent=2) + "\n"
    elif fmt == "markdown":
        text = sch.markdown_section(exps[0]) if name is not None else sch.markdown_doc(registry)
    else:
        text = "\n".join(sch.help_text(e) for e in exps)
    sys.stdout.write(text)


def main() -> None:
    try:
        app()
    finally:
        # the interpreter's last garbage collection walks every object torch, pandas and matplotlib left
        # (about a second after a run); the process is ending, so leave them to the OS (atexit handlers,
        # e.g. Ray's shutdown, still run)
        gc.freeze()


if __name__ == "__main__":
    main()
