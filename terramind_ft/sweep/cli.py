"""``terramind-ft sweep``: run a hyper-parameter sweep of a training config, locally or on SLURM.

    terramind-ft sweep --config configs/sweeps/sen1floods11_lr_tiny.yaml      # run (or continue) it
    terramind-ft sweep --status --config configs/sweeps/sen1floods11_lr.yaml  # table + best.yaml now
    terramind-ft sweep --check --config sweep.yaml                            # validate only

Running the same command again continues an interrupted sweep: finished trials are kept, trials whose
worker died resume from their run folder's last checkpoint, and only the missing trials are started.
"""

from __future__ import annotations

import argparse
import signal
import sys

from terramind_ft.errors import TerraMindFTError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="terramind-ft sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", required=True, help="the sweep file (sweep.yaml)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true",
                      help="write and print the results table and best.yaml of the study as it is; start nothing")
    mode.add_argument("--check", action="store_true",
                      help="validate the sweep file against the base config's parser and stop")
    p.add_argument("--output-dir", default=None, help="override the sweep's output_dir")
    p.add_argument("--launcher", choices=("local", "slurm", "debug"), default=None,
                   help="override launcher.cluster (e.g. debug: run a cluster sweep file inside this process)")
    wait = p.add_mutually_exclusive_group()
    wait.add_argument("--wait", dest="wait", action="store_true", default=None,
                      help="wait for SLURM workers to finish, then write the results (local sweeps always wait)")
    wait.add_argument("--no-wait", dest="wait", action="store_false",
                      help="return after submitting (local workers keep running in the background)")
    p.add_argument("--retry-failed", action="store_true",
                   help="enqueue again the trials that failed with an error (they resume from their run folder)")
    p.add_argument("--skip-check", action="store_true",
                   help="do not parse the search space with the base config's parser before starting")
    return p


def _sigterm_as_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    from terramind_ft.sweep.launch import run_sweep, show_status
    from terramind_ft.sweep.spec import check_against_cli, configure_logging, load_spec

    configure_logging()

    try:
        spec = load_spec(args.config, output_dir=args.output_dir, cluster=args.launcher)
        if args.status:
            return show_status(spec)
        if args.check:
            check_against_cli(spec, progress=print, write=False)
            print(f"{args.config}: OK ({len(spec.search_space)} search-space key(s), {spec.budget} trial(s), "
                  f"launcher {spec.launcher.cluster})")
            return 0
        # SIGTERM (timeout, a scheduler) stops the driver as Ctrl-C does: its local workers are stopped and their
        # trials marked for resumption, instead of orphaned.
        previous = signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)
        try:
            return run_sweep(spec, wait=args.wait, retry_failed=args.retry_failed, check=not args.skip_check)
        finally:
            signal.signal(signal.SIGTERM, previous)
    except TerraMindFTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
