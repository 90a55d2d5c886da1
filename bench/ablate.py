"""Ablation of the trainer's small-data options: train each variant on one preprocessed cohort, then score it with
the real evaluator (`vugan evaluate`, the run config's settings) and bench/class_check.py.

    .venv/bin/python bench/ablate.py runs/00001-demo/preprocess --config configs/demo.toml --out /tmp/ablate \
        --variant "base=" --variant "s32=trainer.width=32" --variant "s32+mbstd=trainer.width=32,trainer.minibatch_stddev=true"

A variant is NAME=OVERRIDES (comma-separated --set values on top of --config; empty = the config as is). One JSON
line per finished variant is appended to OUT/results.jsonl (rerunning skips variants already there), and a
markdown table of all finished variants is printed: class check, MS-SSIM synthetic vs real (within class), TSTR vs
TRTR balanced accuracy, FD-VU and FRD ratios against holdout with their intervals, the C2ST AUC (overall and worst
class), the strongest per-patient attack's AUC with its interval, training seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from vugan.pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)

tf_env.configure()
VUGAN = str(Path(sys.executable).with_name("vugan"))


def run(args: list[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([VUGAN, *args], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=os.environ)
    if proc.returncode != 0:
        raise SystemExit(f"vugan {args[0]} failed ({proc.returncode}); see {log}")
    return time.perf_counter() - started


def split_overrides(text: str) -> list[str]:
    """'a.b=1,c.d="x,y"' -> ['a.b=1', 'c.d="x,y"'] (commas inside quotes stay)."""
    parts, depth, cur = [], "", ""
    for ch in text:
        if ch in "'\"":
            depth = "" if depth == ch else (depth or ch)
        if ch == "," and not depth:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in parts + [cur] if p.strip()]


def score(examples: Path, model: Path, evaluation: Path) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from class_check import class_check

    from vugan.components import schema
    from vugan.models.bundle import load_model_bundle

    m = json.loads((evaluation / "metrics.json").read_text())
    train, test = schema.load_split(str(examples), "train"), schema.load_split(str(examples), "test")
    cc = class_check(train, test, load_model_bundle(model))
    strongest = m.get("privacy", {}).get("strongest", {}).get("patient") or {}
    return {
        "class_check": cc["accuracy"], "class_check_per_class": cc["per_class"],
        "msssim_synthetic": m["diversity"]["ms_ssim"]["synthetic"], "msssim_real": m["diversity"]["ms_ssim"]["real"],
        "tstr": m["utility"]["tstr"]["balanced_accuracy"], "trtr": m["utility"]["trtr"]["balanced_accuracy"],
        "fd_ratio": m["fidelity"].get("fid_ratio"), "fd_ratio_ci": m["fidelity"].get("fid_ratio_ci"),
        "frd_ratio": m["fidelity"].get("frd_ratio"), "frd_ratio_ci": m["fidelity"].get("frd_ratio_ci"),
        "c2st": _c2st(m["fidelity"].get("two_sample")),
        # The evaluator's own pick: the per-patient attack with the highest AUC.
        "strongest_patient_attack": {"attack": strongest.get("attack"), "auc": strongest.get("auc"),
                                     "ci": strongest.get("auc_ci")},
    }


def _c2st(two_sample: dict | None) -> dict | None:
    """The gate's fidelity rule: C2ST AUC overall and the worst class (None before the rule existed)."""
    if not two_sample:
        return None
    per = {k: v.get("auc") for k, v in (two_sample.get("per_class") or {}).items()}
    worst = max(((k, a) for k, a in per.items() if a is not None), key=lambda kv: kv[1], default=(None, None))
    return {"overall": two_sample["overall"]["auc"], "worst_class": worst[0], "worst_auc": worst[1], "per_class": per}


def _with_ci(value, ci) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else "")


def table(rows: list[dict]) -> str:
    """Realism first (FD-VU and FRD against holdout with their intervals, the C2ST the gate reads), then the checks
    a poor generator can pass (class check, MS-SSIM, TSTR)."""
    out = ["| variant | FD-VU ratio [95% CI] | FRD ratio [95% CI] | C2ST AUC overall / worst class | class check | "
           "MS-SSIM syn / real (diff) | TSTR / TRTR (diff) | strongest per-patient attack AUC [95% CI] | train s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a = r.get("strongest_patient_attack") or {}
        ci = a.get("ci")
        ci_text = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""
        c = r.get("c2st") or {}
        c2st = f"{c['overall']:.2f} / {c['worst_class']} {c['worst_auc']:.2f}" if c.get("worst_auc") is not None else "n/a"
        out.append(f"| {r['variant']} | {_with_ci(r['fd_ratio'], r.get('fd_ratio_ci'))} | "
                   f"{_with_ci(r.get('frd_ratio'), r.get('frd_ratio_ci'))} | {c2st} | {r['class_check']:.3f} | "
                   f"{r['msssim_synthetic']:.3f} / {r['msssim_real']:.3f} "
                   f"({r['msssim_synthetic'] - r['msssim_real']:+.3f}) | {r['tstr']:.3f} / {r['trtr']:.3f} "
                   f"({r['tstr'] - r['trtr']:+.3f}) | "
                   f"{a.get('auc') or float('nan'):.2f}{ci_text} | {r['train_seconds']:.0f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("examples", type=Path, help="a preprocess artifact folder")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.toml")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--variant", action="append", default=[], help="NAME=OVERRIDES (comma-separated)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = {json.loads(line)["variant"] for line in results.read_text().splitlines()} if results.exists() else set()
    for spec in args.variant:
        name, _, text = spec.partition("=")
        if name in done:
            continue
        overrides = split_overrides(text)
        sets = [a for o in overrides for a in ("--set", o)]
        model, evaluation = args.out / name / "train", args.out / name / "evaluate"
        (args.out / name).mkdir(parents=True, exist_ok=True)
        seconds = run(["train", "--config", str(args.config), *sets, "--examples", str(args.examples),
                       "--out", str(model)], args.out / name / "train.log")
        run(["evaluate", "--config", str(args.config), *sets, "--examples", str(args.examples), "--model", str(model),
             "--out", str(evaluation)], args.out / name / "evaluate.log")
        row = {"variant": name, "overrides": overrides, "train_seconds": seconds,
               **score(args.examples, model, evaluation)}
        with open(results, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(table([row]).splitlines()[-1], flush=True)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
