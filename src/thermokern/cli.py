"""The ``thermokern`` command: ``info``, ``bench`` and ``demo``."""

from __future__ import annotations

import argparse
import platform
import sys

import torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def info(out=sys.stdout) -> int:
    """Print versions, backends (and why any is missing), the CPU ISA and the GPU if any."""
    import thermokern
    from thermokern import _backend

    def p(*a):
        print(*a, file=out)

    p(f"thermokern {thermokern.__version__}")
    p(f"python     {platform.python_version()} ({sys.executable})")
    p(f"torch      {torch.__version__} (CUDA {torch.version.cuda or 'none'})")
    try:
        import triton

        p(f"triton     {triton.__version__}")
    except ImportError:
        p("triton     not installed")
    p(f"cpu        {_cpu_model()}, {torch.get_num_threads()} threads")
    if _backend._C is not None:
        p(f"cpu isa    {_backend._C.cpu_isa()} (best supported: {_backend._C.cpu_best_isa()})")
        archs = _backend._C.cuda_archs()
        p(f"cuda build {'sm_' + ', sm_'.join(archs) if archs else 'not compiled'}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            prop = torch.cuda.get_device_properties(i)
            p(f"gpu {i}      {prop.name}, sm_{prop.major}{prop.minor}, {prop.total_memory / 2**30:.0f} GiB")
    else:
        p("gpu        none")
    p("backends:")
    for name, b in thermokern.available_backends().items():
        mark = "yes" if b.available else "no "
        devices = ",".join(b.devices) or "-"
        p(f"  {name:<10} {mark}  devices: {devices:<9} {b.reason}")
    return 0


def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="benchmark thermokern against eager PyTorch and torch.compile")
    b.add_argument(
        "--op", action="append", dest="ops", metavar="NAME", help="op to run (repeatable; default all)"
    )
    b.add_argument(
        "--device", choices=["cpu", "cuda"], default=None, help="default: cuda if a GPU is present"
    )
    b.add_argument(
        "--dtype",
        action="append",
        dest="dtypes",
        metavar="DTYPE",
        help="float32, bfloat16, float16, float64 (repeatable)",
    )
    b.add_argument(
        "--shape", action="append", dest="shapes", metavar="NxC", help="e.g. 4096x32000 (repeatable)"
    )
    b.add_argument("--quick", action="store_true", help="fewer shapes and repetitions")
    b.add_argument("--json", dest="json_path", metavar="PATH", help="write the results as JSON")
    b.add_argument(
        "--plot", dest="plot_path", metavar="PATH", help="write a PNG bandwidth plot (needs matplotlib)"
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar")


def bench(args) -> int:
    from thermokern.bench import parse_shape, run

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("thermokern bench: --device cuda but no GPU is available", file=sys.stderr)
        return 2
    shapes = None
    if args.shapes:
        try:
            shapes = [parse_shape(s) for s in args.shapes]
        except ValueError as exc:
            print(f"thermokern bench: --shape: {exc}", file=sys.stderr)
            return 2
    result = run(
        ops=args.ops,
        device=device,
        dtypes=args.dtypes,
        shapes=shapes,
        quick=args.quick,
        progress=not args.no_progress,
        json_path=args.json_path,
        plot_path=args.plot_path,
    )  # prints the table itself
    return 0 if result is not None else 1


# ---- demo (sampling branch) ------------------------------------------------------------
def _add_demo(sub) -> None:
    d = sub.add_parser("demo", help="small end-to-end demos")
    demos = d.add_subparsers(dest="demo", required=True)
    e = demos.add_parser(
        "ebm",
        help="train a 2-D energy-based model by persistent contrastive divergence and plot it",
    )
    e.add_argument("--dataset", choices=["8gaussians", "2moons"], default="8gaussians")
    e.add_argument(
        "--out", default="ebm_demo.png", metavar="PATH", help="PNG to write (default ebm_demo.png)"
    )
    e.add_argument("--steps", type=int, default=1500, metavar="N", help="training iterations (default 1500)")
    e.add_argument(
        "--langevin-steps", type=int, default=20, metavar="K", help="sampler steps per iteration (default 20)"
    )
    e.add_argument("--metropolis", action="store_true", help="MALA instead of unadjusted Langevin")
    e.add_argument(
        "--exchange-steps",
        type=int,
        default=600,
        metavar="K",
        help="replica-exchange steps for the samples of exp(-E) (default 600; 200 are burn-in)",
    )
    e.add_argument(
        "--exchange-chains",
        type=int,
        default=1000,
        metavar="C",
        help="replica-exchange chains (default 1000)",
    )
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--quiet", action="store_true", help="no progress lines")
    a = demos.add_parser(
        "ais",
        help="train the 2-D energy-based model, then estimate its log Z by annealed importance sampling",
    )
    a.add_argument(
        "--out", default="ais_demo.png", metavar="PATH", help="PNG to write (default ais_demo.png)"
    )
    a.add_argument("--steps", type=int, default=1500, metavar="N", help="training iterations (default 1500)")
    a.add_argument(
        "--levels",
        default="4,16,64,256,1024",
        metavar="K1,K2,...",
        help="numbers of annealing temperatures to compare (default 4,16,64,256,1024)",
    )
    a.add_argument("--chains", type=int, default=1024, metavar="C", help="AIS chains (default 1024)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--quiet", action="store_true", help="no progress lines")


def demo(args) -> int:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        print(
            f"thermokern demo {args.demo}: the PNG needs matplotlib, which is not installed: "
            "pip install 'thermokern[demo]' (or pip install matplotlib)",
            file=sys.stderr,
        )
        return 2
    if args.demo == "ais":
        return _demo_ais(args)
    if args.steps < 1 or args.langevin_steps < 1 or args.exchange_steps <= 200 or args.exchange_chains < 1:
        print(
            "thermokern demo ebm: --steps, --langevin-steps and --exchange-chains must be >= 1, "
            "--exchange-steps > 200",
            file=sys.stderr,
        )
        return 2
    from thermokern import demo as ebm

    log = None if args.quiet else print
    if log:
        log(
            f"thermokern demo ebm: {args.dataset}, {args.steps} PCD iterations x {args.langevin_steps} "
            f"{'MALA' if args.metropolis else 'Langevin'} steps, {torch.get_num_threads()} threads"
        )
    result = ebm.train(
        args.dataset,
        iterations=args.steps,
        langevin_steps=args.langevin_steps,
        metropolis=args.metropolis,
        seed=args.seed,
        log=log,
    )
    result["exchange"] = ebm.sample_exchange(
        result["model"], chains=args.exchange_chains, n_steps=args.exchange_steps, seed=args.seed
    )
    if log:
        ex = result["exchange"]
        log(
            f"  replica exchange: T=1 acceptance {ex['acceptance']:.3f}, R-hat {ex['rhat']:.3f}, "
            f"bulk ESS {ex['ess']:.0f}, swap acceptance {min(ex['swap_acceptance']):.2f}.."
            f"{max(ex['swap_acceptance']):.2f}"
        )
    ebm.plot(result, args.out)
    print(f"wrote {args.out} (training {result['seconds']:.1f} s)")
    return 0


def _demo_ais(args) -> int:
    try:
        levels = tuple(int(k) for k in args.levels.split(","))
    except ValueError:
        levels = ()
    if args.steps < 1 or args.chains < 2 or not levels or min(levels) < 1:
        print(
            "thermokern demo ais: --steps >= 1, --chains >= 2 and --levels a comma-separated list "
            "of ints >= 1",
            file=sys.stderr,
        )
        return 2
    from thermokern import demo as ebm

    log = None if args.quiet else print
    if log:
        log(f"thermokern demo ais: training the 8gaussians EBM ({args.steps} PCD iterations)")
    result = ebm.train("8gaussians", iterations=args.steps, seed=args.seed, log=None)
    study = ebm.ais_study(result["model"], levels=levels, chains=args.chains, seed=args.seed, log=log)
    ebm.plot_ais(study, args.out)
    print(f"wrote {args.out}")
    return 0


# ---- end demo ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="thermokern", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, backends, CPU ISA and GPU")
    _add_bench(sub)
    _add_demo(sub)
    args = parser.parse_args(argv)
    if args.command == "info":
        return info()
    if args.command == "bench":
        return bench(args)
    if args.command == "demo":
        return demo(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
