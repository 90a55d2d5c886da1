"""The ``vugan`` command: one sub-command per component, plus ``run`` (the whole pipeline) and ``runs``.

Every component sub-command accepts the same core flags:
  --config FILE        the run's TOML file (defaults apply to sections it leaves out)
  --set sec.key=value  type-checked override, repeatable
  --out DIR            write the artifact here (standalone use); inputs then come from --<input> DIR flags
  --run DIR            rerun this component inside an existing run folder (inputs from that run)
  --force / --dry-run  ignore the cache / print the plan and exit
  --debug              library logs, warnings and full tracebacks on the terminal (else: <out>/log.txt)
Unknown flags are refused, except Apache Beam pipeline options for preprocess and run.
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

# The registry lives in pipeline.registry (the runner reads it too); re-exported for existing imports.
from vugan.pipeline.registry import COMPONENT_MODULES, component_module as _component_module  # noqa: E402,F401


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="run config (TOML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="type-checked config override; repeatable")
    parser.add_argument("--debug", action="store_true",
                        help="show library logs, warnings and full tracebacks on the terminal")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vugan", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMPONENT_MODULES:
        module = _component_module(name)
        spec = module.SPEC
        p = sub.add_parser(name, help=spec.description, description=spec.description)
        _add_common(p)
        p.add_argument("--out", type=Path, help="output folder for this component's artifact")
        if name != "phantom":
            p.add_argument("--run", type=Path, help="an existing run folder: rerun this component there")
            p.add_argument("--force", action="store_true", help="run even when the cache says nothing changed")
            p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
        for input_name in spec.inputs:
            p.add_argument(f"--{input_name}", type=Path, help=f"input artifact folder ({spec.inputs[input_name].value})")
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)
    p = sub.add_parser("run", help="run the whole pipeline into a new numbered run folder")
    _add_common(p)
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--manifest", help="scans.csv to preprocess (overrides run.manifest)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (what runs, what is cached, why) and exit")
    p.add_argument("--run", type=Path, help="rerun inside this existing run folder, skipping cached components")
    p.add_argument("--force", action="store_true", help="with --run: rerun every component even when cached")
    p.add_argument("--force-release", action="store_true",
                   help="let synthesize write the synthetic set although the verdict failed (recorded)")
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
        # Beam pipeline options are left for preprocess (parse_known_args); anything else unknown is refused.
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


def _reject_unknown(parser, extra, allow_beam: bool) -> None:
    if not extra:
        return
    unknown = list(extra)
    if allow_beam:
        from vugan.components.preprocess.beam_pipeline import unknown_beam_flags
        unknown = unknown_beam_flags(extra)
    if unknown:
        what = "neither a vugan flag nor an Apache Beam pipeline option" if allow_beam else "not a vugan flag"
        parser.error(f"unrecognized arguments: {' '.join(unknown)} ({what}; see --help)")


def _dispatch(parser, args, extra, argv) -> int:
    if args.command == "runs":
        _reject_unknown(parser, extra, allow_beam=False)
        from vugan.pipeline.runner import list_runs
        print(list_runs(args.runs_dir))
        return 0
    if args.command == "run":
        _reject_unknown(parser, extra, allow_beam=True)  # they go to preprocess
    else:
        module = _component_module(args.command)
        _reject_unknown(parser, extra, allow_beam=getattr(module, "ACCEPTS_EXTRA_ARGS", False))
    if getattr(args, "run", None) is not None:
        # Inside a run folder the base is the run's saved config, not the defaults.
        from vugan.pipeline.runner import resolve_run_config
        config = resolve_run_config(args.run, args.config, args.overrides)
    else:
        config = load_config(args.config, args.overrides)
    if args.command == "run":
        from vugan.pipeline.runner import run_pipeline
        result = run_pipeline(config, args.runs_dir, manifest=args.manifest, dry_run=args.dry_run,
                              config_path=args.config, extra_args=extra, run_dir=args.run, force=args.force,
                              force_release=args.force_release, command=" ".join(["vugan", *argv]),
                              debug=bool(getattr(args, "debug", False)))
        return 0 if args.dry_run or result.ok else 1
    if args.command == "audit" and getattr(args, "run", None) is not None:
        module.defaults_in_run(args)  # audit is no step of a run: --run names its inputs and its --out
        args.run = None
    options = module.options_from_args(args, extra) if hasattr(module, "options_from_args") else {}
    config = module.adjust_config(config, args) if hasattr(module, "adjust_config") else config
    if getattr(args, "run", None) is not None:
        from vugan.pipeline.runner import rerun_component
        result = rerun_component(args.run, args.command, config, options=options, force=args.force,
                                 dry_run=args.dry_run, overrides=args.overrides, config_path=args.config)
        return 0 if args.dry_run or result.ok else 1
    if args.out is None:
        parser.error(f"{args.command}: pass --out DIR (or --run DIR to work inside a run folder)")
    inputs = {name: getattr(args, name) for name in module.SPEC.inputs if getattr(args, name) is not None}
    if getattr(args, "dry_run", False):
        print(json.dumps({"component": args.command, "out": str(args.out),
                          "inputs": {k: str(v) for k, v in inputs.items()},
                          "options": {k: v if isinstance(v, (list, bool, int, float, type(None))) else str(v)
                                      for k, v in options.items()}, "config": config.to_dict()},
                         indent=2))
        return 0
    manifest = module.SPEC.run(config, inputs, args.out, options=options)
    print(json.dumps({"artifact": str(args.out), "counts": manifest["counts"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
