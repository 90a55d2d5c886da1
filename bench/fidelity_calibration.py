"""Calibration table of the fidelity metrics (components/evaluator/calibration.py) on a preprocessed cohort.

    .venv/bin/python bench/fidelity_calibration.py --examples runs/<run>/preprocess --out /tmp/calib.json

The TEST split's patients play the "generator" (real, blurred, checkerboard, shifted, one-mode); TRAIN and HOLDOUT
are the evaluator's reference sets, exactly as `vugan evaluate` uses them. Spaces: the evaluator's domain encoder
(trained on TRAIN, as the evaluator does), FRD (radiomics), and the fixed VU encoder when the project ships it.
Prints a markdown table (ratio [95% interval] against holdout and against train; mode-collapse rule).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from vugan.pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)
tf_env.configure()


def spaces_for(train, class_names, cfg, names):
    from vugan.components.evaluator.features import embeddings
    from vugan.components.evaluator.quality import utility

    out = {}
    for name in names:
        if name == "domain":
            settings = utility.ClassifierSettings.from_config(cfg)
            clf = utility.train_classifier(train.images, train.class_ids, len(class_names), settings, cfg.seed,
                                           groups=train.patients.astype(str))
            out["domain"] = embeddings.domain_embedder(clf, batch_size=cfg.batch_size)
        elif name == "radiomics":
            out["radiomics"] = embeddings.radiomics_embedder(cfg.batch_size)
        elif name == "vu":
            out["vu"] = embeddings.vu_embedder(batch_size=cfg.batch_size)
        else:
            raise SystemExit(f"--spaces: unknown space {name!r} (domain, radiomics, vu)")
    return out


def fmt_ratio(o: dict) -> str:
    r, ci = o["fd_ratio"], o["fd_ratio_ci"]
    if r is None:
        return "n/a"
    return f"{r:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{r:.2f}"


def markdown(results: dict, rule: float) -> str:
    spaces = list(next(iter(results.values()))["spaces"])
    head = ["control"] + [f"{s} vs holdout" for s in spaces] + [f"{s} vs train" for s in spaces] + ["mode collapse"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for control, row in results.items():
        cells = [control]
        cells += [fmt_ratio(row["spaces"][s]["against_holdout"]) for s in spaces]
        cells += [fmt_ratio(row["spaces"][s]["against_train"]) for s in spaces]
        cells.append("fires" if row["mode_collapse_warning"] else "quiet")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nRule: ratio <= {rule:g} (privacy.max_fid_ratio for FD-VU, privacy.max_frd_ratio for FRD).")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", required=True, help="an Examples artifact (preprocess output)")
    ap.add_argument("--config", default="", help="a vugan TOML for [evaluator]/[privacy] (default: built-ins)")
    ap.add_argument("--spaces", default="domain,radiomics", help="comma list of domain, radiomics, vu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="write the results as JSON here")
    args = ap.parse_args(argv)

    from vugan.components.evaluator import calibration
    from vugan.components.evaluator.run import load_inputs
    from vugan.pipeline.config import load_config

    config = load_config(args.config or None)
    cfg = dataclasses.replace(config.evaluator, seed=args.seed)
    manifest, splits = load_inputs(Path(args.examples))
    class_names = tuple(manifest["properties"]["class_names"])
    spaces = spaces_for(splits["train"], class_names, cfg, [s for s in args.spaces.split(",") if s])
    results = calibration.calibrate(splits["train"], splits["holdout"], splits["test"], spaces, class_names, cfg,
                                    args.seed)
    counts = {k: {"units": len(v), "patients": len(set(v.patients))} for k, v in splits.items()}
    print(f"cohort: {args.examples}: {counts}")
    print(markdown(results, config.privacy.max_fid_ratio or 5.0))  # reported at 5 when the rule is off (default)
    if args.out:
        Path(args.out).write_text(json.dumps({"examples": str(args.examples), "counts": counts,
                                              "results": results}, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
