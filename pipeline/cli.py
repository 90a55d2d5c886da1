"""The ``vugan`` command: one sub-command per component, plus ``run`` (the whole pipeline) and ``runs``.

Every component sub-command accepts the same core flags:
  --config FILE        the run's TOML file (defaults apply to sections it leaves out)
  --set sec.key=value  type-checked override, repeatable
  --out DIR            write the artifact here (standalone use); inputs then come from --<input> DIR flags
  --run DIR            rerun this component inside an existing run folder (inputs from that run)
  --force / --dry-run  ignore the cache / print the plan and exit
  --debug              library logs, warnings and full tracebacks on the terminal (else: <out>/log.txt)
Unknown flags are refused, except those a component declares it passes on (ComponentSpec.cli.extra_args: Apache
Beam pipeline options), for it and for ``run``. Everything component-specific (sub-commands, flags, options, the
``run`` steps) comes from the components' declared contracts (``pipeline.registry.components()``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vugan.pipeline import tf_env

tf_env.configure()  # before anything imports TensorFlow: oneDNN and threads are read once, at its load

from vugan.pipeline import console  # noqa: E402
from vugan.pipeline.artifacts import ArtifactError  # noqa: E402
from vugan.pipeline.config import ConfigError, load_config  # noqa: E402
from vugan.pipeline.locks import FolderLockedError  # noqa: E402
from vugan.pipeline.registry import components  # noqa: E402


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="run config (TOML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="type-checked config override; repeatable")
    parser.add_argument("--debug", action="store_true",
                        help="show library logs, warnings and full tracebacks on the terminal")


def build_parser() -> argparse.ArgumentParser:
    registry = components()
    parser = argparse.ArgumentParser(prog="vugan", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for spec in registry.specs:
        p = sub.add_parser(spec.name, help=spec.description, description=spec.description)
        _add_common(p)
        p.add_argument("--out", type=Path, help="output folder for this component's artifact")
        if spec.takes_run_folder:
            p.add_argument("--run", type=Path, help="an existing run folder: rerun this component there")
            p.add_argument("--force", action="store_true", help="run even when the cache says nothing changed")
            p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
        for input_name in spec.inputs:
            p.add_argument(f"--{input_name}", type=Path, help=f"input artifact folder ({spec.inputs[input_name].value})")
        if spec.cli.add_arguments is not None:
            spec.cli.add_arguments(p)
    p = sub.add_parser("run", help="run the whole pipeline into a new numbered run folder")
    _add_common(p)
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--manifest", help="the scans.csv manifest the run starts from (overrides run.manifest)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (what runs, what is cached, why) and exit")
    p.add_argument("--run", type=Path, help="rerun inside this existing run folder, skipping cached components")
    p.add_argument("--force", action="store_true", help="with --run: rerun every component even when cached")
    for spec in registry.pipeline:
        if spec.cli.add_run_arguments is not None:
            spec.cli.add_run_arguments(p)
    p = sub.add_parser("runs", help="list runs and each component's state")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--debug", action="store_true", help="full tracebacks on the terminal")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Known before parsing, because building the parser imports the components (and Beam's import notices).
    debug = "--debug" in argv
    out = _flag_value(argv, "--out")
    log_path = Path(out) / "log.txt" if out and "://" not in out else None
    with console.quiet_terminal(log_path, debug) as log:
        parser = build_parser()
        # Pass-through flags (Beam pipeline options) are left for the component declaring them (parse_known_args);
        # anything else unknown is refused.
        args, extra = parser.parse_known_args(argv)
        try:
            return _dispatch(parser, args, extra, argv)
        except (ConfigError, ArtifactError, FileNotFoundError, ValueError, FolderLockedError) as exc:
            _error(args, str(exc), log, debug)
            return 2
        except KeyboardInterrupt:
            _error(args, "interrupted", log, debug)
            return 130
        except Exception as exc:  # the last line of defence: one line, never a bare traceback
            os_error = console.find_os_error(exc)
            if os_error is not None:
                _error(args, console.describe_os_error(os_error), log, debug)
                return 2
            where = f" (traceback in {log_path})" if log is not None else ""
            _error(args, f"unexpected {type(exc).__name__}: {str(exc)[:500]}; rerun with --debug for the full "
                         f"traceback{where}, and report it", log, debug)
            return 1


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _error(args, message: str, log, debug: bool) -> None:
    """One line on the terminal; the traceback into the log file (or, with --debug, on the terminal)."""
    if debug or log is not None:
        import traceback

        text = traceback.format_exc()
        if text.strip() != "NoneType: None":
            print(text, file=sys.stderr if debug else log, end="")
    print(f"vugan {args.command}: error: {message}", file=sys.stderr)


def _reject_unknown(parser, extra, specs) -> None:
    """Refuse unknown flags unless one of ``specs`` declares it takes them (ComponentSpec.cli.extra_args)."""
    if not extra:
        return
    kinds = [spec.cli.extra_args for spec in specs if spec.cli.extra_args is not None]
    unknown = list(extra)
    for kind in kinds:  # each kind takes away the flags it knows
        unknown = list(kind.unknown(unknown))
    if unknown:
        what = ("neither a vugan flag nor " + " nor ".join(k.kind for k in kinds)) if kinds else "not a vugan flag"
        parser.error(f"unrecognized arguments: {' '.join(unknown)} ({what}; see --help)")


def _dispatch(parser, args, extra, argv) -> int:
    if args.command == "runs":
        _reject_unknown(parser, extra, ())
        from vugan.pipeline.runner import list_runs
        print(list_runs(args.runs_dir))
        return 0
    registry = components()
    spec = None if args.command == "run" else registry.spec(args.command)
    _reject_unknown(parser, extra, registry.pipeline if spec is None else (spec,))  # `run`: for its steps
    if getattr(args, "run", None) is not None:
        # Inside a run folder the base is the run's saved config, not the defaults.
        from vugan.pipeline.runner import resolve_run_config
        config = resolve_run_config(args.run, args.config, args.overrides)
    else:
        config = load_config(args.config, args.overrides)
    if spec is None:
        from vugan.pipeline.runner import run_pipeline
        # Each step's options from `vugan run`'s flags (a step's run flags carry the names of its own).
        options = {s.name: s.cli.options(args, extra) for s in registry.pipeline if s.cli.options is not None}
        result = run_pipeline(config, args.runs_dir, manifest=args.manifest, dry_run=args.dry_run,
                              config_path=args.config, extra_args=extra, run_dir=args.run, force=args.force,
                              options=options, command=" ".join(["vugan", *argv]),
                              debug=bool(getattr(args, "debug", False)))
        return 0 if args.dry_run or result.ok else 1
    if not spec.in_pipeline and getattr(args, "run", None) is not None:
        spec.cli.in_run_folder(args)  # no step of a run: --run names its inputs and its --out
        args.run = None
    options = spec.cli.options(args, extra) if spec.cli.options is not None else {}
    if spec.cli.adjust_config is not None:
        config = spec.cli.adjust_config(config, args)
    if getattr(args, "run", None) is not None:
        from vugan.pipeline.runner import rerun_component
        result = rerun_component(args.run, spec.name, config, options=options, force=args.force,
                                 dry_run=args.dry_run, overrides=args.overrides, config_path=args.config,
                                 extra_args=extra)
        return 0 if args.dry_run or result.ok else 1
    if args.out is None:
        parser.error(f"{args.command}: pass --out DIR (or --run DIR to work inside a run folder)")
    inputs = {name: getattr(args, name) for name in spec.inputs if getattr(args, name) is not None}
    if getattr(args, "dry_run", False):
        print(json.dumps({"component": args.command, "out": str(args.out),
                          "inputs": {k: str(v) for k, v in inputs.items()},
                          "options": {k: v if isinstance(v, (list, bool, int, float, type(None))) else str(v)
                                      for k, v in options.items()}, "config": config.to_dict()},
                         indent=2))
        return 0
    manifest = spec.run(config, inputs, args.out, options=options)
    print(json.dumps({"artifact": str(args.out), "counts": manifest["counts"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
