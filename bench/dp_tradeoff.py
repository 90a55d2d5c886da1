"""Privacy-utility trade-off of DP training: the non-private baseline and several noise levels, each trained the
same number of steps from the same config and evaluated with the evaluator's own functions. Prints epsilon, FID
ratio (domain embedding), TSTR balanced accuracy, the region class check (bench/class_check.py), the strongest
membership attack's AUC (per unit and per patient), and the per-step cost of DP training against non-DP training.
FD and FRD ratios come with their bootstrap intervals; grids.png puts every run's real and generated units per class
side by side.

    .venv/bin/python bench/dp_tradeoff.py                      # builds a 320-patient 32x32 phantom cohort first
    .venv/bin/python bench/dp_tradeoff.py EXAMPLES_DIR --steps 800 --noise 0.5,1.0,2.0 --unit patient
    .venv/bin/python bench/dp_tradeoff.py --config configs/dp.toml --unit patient --public-patients 96
        # plus public pre-training: a non-private model on a DISJOINT phantom cohort (another seed) starts every
        # "pre-trained" DP run (trainer.init_from); epsilon covers only the private cohort
    .venv/bin/python bench/dp_tradeoff.py EXAMPLES_DIR --config configs/dp.toml --unit patient --epsilon 10,3,1 \
        --public-patients 96 --public-steps 4000 --finetune-set trainer.lr_g=1e-5 --finetune-set trainer.lr_d=5e-5
        # the README's table: sigma per target epsilon, a long public run, gentle fine-tuning

The trainer options come from --config (default configs/demo.toml: generator BatchNorm, EMA, DiffAugment, XLA);
--steps/--batch/--width and any --set override it for every run alike. DP-SGD needs many privacy units per batch
(signal ~ units x clip norm, noise ~ sigma x clip norm x sqrt(#D parameters)), hence the larger default cohort,
32x32 crops (a D of ~60k parameters at width 16) and batch 128.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from vugan.pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)
tf_env.configure()

from class_check import class_check, save_grid  # noqa: E402  (bench/ is on the path when this file runs)


def build_phantom_cohort(out: Path, patients: int, image_size: int, seed: int) -> str:
    """The phantom cohort and its Examples artifact, with the project's own CLI (as a user would)."""
    examples = out / f"examples-{patients}p-{image_size}px"
    if (examples / "artifact.json").exists():
        return str(examples)
    phantom = out / f"phantom-{patients}p"
    vugan = [sys.executable, "-m", "vugan.pipeline.cli"]
    if not (phantom / "artifact.json").exists():
        subprocess.run([*vugan, "phantom", "--out", str(phantom), "--patients", str(patients), "--seed", str(seed)],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*vugan, "preprocess", "--manifest", str(phantom / "scans.csv"), "--out", str(examples),
                    "--set", f"preprocess.image_size=[{image_size},{image_size}]"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return str(examples)


def train_one(examples: str, out: Path, config: str | None, overrides: list[str]) -> dict:
    """One trainer run (the real component); returns model_info.json and the steady-state seconds per step."""
    from vugan.components.trainer.callbacks import read_stats
    from vugan.components.trainer.component import SPEC
    from vugan.pipeline.config import load_config

    cfg = load_config(config, overrides)
    SPEC.run(cfg, {"examples": examples}, out, log=lambda m: None)
    info = json.loads((out / "model_info.json").read_text())
    rows = read_stats(out / "stats.jsonl")
    rates = [r["images_per_s"] for r in rows[1:]] or [rows[-1]["images_per_s"]]  # row 0 includes tracing
    real_images_per_step = cfg.trainer.batch_size * cfg.trainer.d_steps
    return {"info": info, "seconds_per_step": real_images_per_step / float(np.median(rates))}


def train_public_model(out: Path, args, common: list[str]) -> Path:
    """The public pre-training: a non-private run on a phantom cohort disjoint from the private one (its own
    patients, another seed), with the same architecture. Reused when it is already there."""
    examples = build_phantom_cohort(out / "public", args.public_patients, args.image_size, args.seed + 23)
    folder = out / "public-model"
    if not (folder / "model_info.json").exists():
        steps = args.public_steps or args.steps
        train_one(examples, folder, args.config, common + ["trainer.dp=false", f"trainer.steps={steps}",
                                                           f"trainer.checkpoint_every={steps}",
                                                           f"trainer.image_every={steps}"])
    return folder


def evaluate_one(examples: str, model_dir: Path, splits: dict, args) -> dict:
    """FID ratio (domain embedding), TSTR balanced accuracy and the strongest attacks, by the evaluator's core."""
    from vugan.components.evaluator import core
    from vugan.components.evaluator.privacy.attacks import evaluate_privacy
    from vugan.components.evaluator.privacy.spec import PrivacyConfig
    from vugan.components.evaluator.spec import EvaluatorConfig
    from vugan.models.bundle import generate, load_model_bundle

    bundle = load_model_bundle(model_dir)
    cfg = dataclasses.replace(EvaluatorConfig(), classifier_epochs=args.eval_epochs, min_synthetic=args.synthetic,
                              msssim_pairs=50, seed=args.seed)
    synthetic = core.draw_synthetic(lambda ids, seed: generate(bundle, ids, seed), splits["train"],
                                    bundle.class_names, args.synthetic, args.seed)
    outcome = core.evaluate_units(splits["train"], splits["holdout"], splits["test"], synthetic, bundle.class_names,
                                  cfg, inception=None, inception_skip_reason="bench: domain embedding only")
    pcfg = dataclasses.replace(PrivacyConfig(), pbb_enabled=False, bootstrap=args.bootstrap)
    privacy = evaluate_privacy(splits["train"], splits["holdout"], synthetic, bundle, outcome.domain, pcfg,
                               args.seed).metrics
    check = class_check(splits["train"], splits["test"], bundle, per_class=100, seed=args.seed)
    save_grid(model_dir / "class_check.png", splits["train"], check)
    m = outcome.metrics
    fid = m["fidelity"]
    return {"fid_ratio": fid["fid_ratio"], "fid_ratio_ci": fid.get("fid_ratio_ci"),
            "frd_ratio": fid.get("frd_ratio"), "frd_ratio_ci": fid.get("frd_ratio_ci"), "tstr_bacc": m["utility"]["tstr_balanced_accuracy"],
            "trtr_bacc": m["utility"]["trtr_balanced_accuracy"], "class_check": check["accuracy"],
            "unit_attack": privacy["strongest"].get("unit", {}),
            "patient_attack": privacy["strongest"].get("patient", {})}


def noise_levels(args, train) -> list[float]:
    """--noise as given, or with --epsilon the sigma per target: q = batch / training units, as the trainer plans it
    (components/trainer/dp/plan.py), delta the trainer's default for this many patients."""
    if not args.epsilon:
        return [float(x) for x in args.noise.split(",")]
    from vugan.components.trainer.dp import accounting as acc

    q = args.batch / len(train)
    delta = acc.default_delta(len(set(train.patients)))
    # Rounded UP to 3 decimals: more noise, so the run stays within its target.
    return [float(np.ceil(acc.noise_multiplier_for_epsilon(float(e), q, args.steps, delta, "pld") * 1000) / 1000)
            for e in args.epsilon.split(",")]


def fmt(x, spec=".3f") -> str:
    return "-" if x is None else ("inf" if isinstance(x, float) and np.isinf(x) else format(x, spec))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("examples", nargs="?", help="an Examples artifact folder (preprocess output); default: build a "
                                               "phantom cohort of --patients at --image-size under --out")
    p.add_argument("--patients", type=int, default=320, help="phantom cohort size when no EXAMPLES is given")
    p.add_argument("--image-size", type=int, default=32, help="crop size of that cohort")
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.toml"), help="trainer options of every run")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra override for every run (repeatable)")
    p.add_argument("--steps", type=int, default=800, help="training steps of every run")
    p.add_argument("--noise", default="0.5,1.0,2.0", help="comma list of noise multipliers (one DP run each)")
    p.add_argument("--epsilon", default="", help="comma list of per-unit epsilons (per patient with --unit patient) "
                                                 "instead of --noise: each run's sigma is the smallest that keeps "
                                                 "--steps steps within it (PLD, the trainer's default accountant)")
    p.add_argument("--public-model", default="", metavar="FOLDER",
                   help="start the pre-trained runs from this trained model (e.g. an earlier run's OUT/public-model) "
                        "instead of training one on a --public-patients phantom")
    p.add_argument("--finetune-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config overrides of the runs that start from the public model only (fine-tuning: e.g. "
                        "trainer.lr_g=1e-5, trainer.d_trainable_layers=...); repeatable")
    p.add_argument("--clip", type=float, default=1.0, help="dp_clip_norm")
    p.add_argument("--unit", default="unit", choices=("patient", "unit"),
                   help="privacy unit of the DP runs (patient needs many patients per batch to learn)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--noise-dim", type=int, default=64)
    p.add_argument("--eval-epochs", type=int, default=3, help="evaluator classifier epochs")
    p.add_argument("--synthetic", type=int, default=500, help="synthetic units per evaluation (at least)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the attack AUC CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--public-patients", type=int, default=0,
                   help="> 0: also train a non-private model on a disjoint phantom cohort of this many patients "
                        "(seed + 23) and add a row for it and, per noise level, a DP run started from it")
    p.add_argument("--public-steps", type=int, default=0, help="steps of the public model (0 = --steps)")
    p.add_argument("--out", default="", help="keep the models here (default: a temporary folder)")
    p.add_argument("--reuse", action="store_true",
                   help="take rows from OUT/results.json whose run and settings match (to add noise levels later)")
    args = p.parse_args(argv)

    from vugan.components import schema

    out = Path(args.out or tempfile.mkdtemp(prefix="dp-tradeoff-"))
    args.examples = args.examples or build_phantom_cohort(out, args.patients, args.image_size, args.seed + 11)
    splits = {s: schema.load_split(args.examples, s) for s in ("train", "holdout", "test")}
    print(f"{args.examples}: " + ", ".join(f"{s} {len(u)} units / {len(set(u.patients))} patients"
                                           for s, u in splits.items()) + f"; models under {out}", flush=True)
    common = [f"trainer.steps={args.steps}", f"trainer.batch_size={args.batch}", f"trainer.width={args.width}",
              f"trainer.noise_dim={args.noise_dim}", f"trainer.seed={args.seed}",
              f"trainer.log_every={max(1, args.steps // 10)}", f"trainer.image_every={args.steps}",
              f"trainer.checkpoint_every={args.steps}", *args.set]
    runs = [("non-private", common + ["trainer.dp=false"])]
    dp_runs = [(f"DP sigma={s}", common + ["trainer.dp=true", f"trainer.dp_noise_multiplier={s}",
                                           f"trainer.dp_clip_norm={args.clip}", f"trainer.dp_unit={args.unit}"])
               for s in noise_levels(args, splits["train"])]
    if args.public_patients > 0 or args.public_model:
        public = Path(args.public_model) if args.public_model else train_public_model(out, args, common)
        runs.append(("public only", None))  # the pre-trained model itself: no private data at all
        finetune = [f"trainer.init_from={public}", *args.finetune_set]
        runs.append(("pre-trained + non-private", runs[0][1] + finetune))
        # Each noise level with and then without pre-training, so that a table cut short still pairs them.
        for name, overrides in dp_runs:
            runs += [(f"pre-trained + {name}", overrides + finetune), (name, overrides)]
    else:
        runs += dp_runs
    reusable = reusable_rows(out / "results.json", args) if args.reuse else {}
    rows = []
    for i, (name, overrides) in enumerate(runs):
        if name in reusable:
            rows.append(reusable[name])
            print(f"reused: {name} (from {out / 'results.json'})", flush=True)
            continue
        if overrides is None:  # the public model, evaluated on the private cohort's splits
            ev = evaluate_one(args.examples, public, splits, args)
            rows.append({"run": name, "epsilon": None, "delta": None, **ev, "s_per_step": None,
                         "folder": str(public)})
            print(f"done: {name}: " + json.dumps({k: v for k, v in rows[-1].items() if k != "run"}), flush=True)
            save(out, args, rows)
            continue
        folder = out / f"run{i}-{name.replace(' ', '_').replace('=', '').replace('+', '')}"
        trained = train_one(args.examples, folder, args.config, overrides)
        ev = evaluate_one(args.examples, folder, splits, args)
        dp = trained["info"]["dp"]
        rows.append({"run": name, "epsilon": dp.get("epsilon") if dp.get("enabled") else None,
                     "delta": dp.get("delta"), **ev, "s_per_step": trained["seconds_per_step"],
                     "sigma": dp.get("noise_multiplier"), "folder": str(folder)})
        print(f"done: {name}: " + json.dumps({k: v for k, v in rows[-1].items() if k != "run"}), flush=True)
        save(out, args, rows)  # after every row: a run cut short keeps what it measured (and --reuse takes it)

    base = rows[0]["s_per_step"]
    print(f"\n{args.steps} steps, batch {args.batch}, width {args.width}, clip {args.clip}, privacy unit "
          f"{args.unit}, Poisson sampling, config {Path(args.config).name} {' '.join(args.set)}; epsilon = PLD at "
          f"the run's delta; FID ratio = domain-embedding FD / real-vs-real FD; class check = share of generated "
          f"units a real-trained region classifier labels with their class; AUC = strongest attack (by evidence: smallest per-patient p-value).")
    head = (f"{'run':<16}{'epsilon':>9}{'delta':>9}{'FID ratio':>11}{'TSTR bAcc':>11}{'class chk':>11}"
            f"{'AUC unit':>10}{'AUC patient':>13}{'s/step':>9}{'x non-DP':>10}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        seconds, ratio = cost(r, base)
        print(f"{r['run']:<16}{fmt(r['epsilon'], '.2f'):>9}{fmt(r['delta'], '.0e'):>9}{fmt(r['fid_ratio'], '.2f'):>11}"
              f"{fmt(r['tstr_bacc']):>11}{fmt(r['class_check']):>11}{fmt(r['unit_attack'].get('auc')):>10}"
              f"{fmt(r['patient_attack'].get('auc')):>13}{seconds:>9}{ratio:>10}")
    print(f"TRTR balanced accuracy (real-data reference): {rows[0]['trtr_bacc']:.3f}; strongest attacks: "
          + "; ".join(f"{r['run']}: {r['unit_attack'].get('attack', '-')}" for r in rows))
    save(out, args, rows)
    save_grids(out / "grids.png", rows)
    print("\n" + markdown_table(rows) + f"\n\nresults.json, table.md, grids.png (every run's class_check.png) "
          f"under {out}")
    return 0


def save_grids(path: Path, rows: list[dict]) -> None:
    """Every run's class_check.png (real units per class, then generated ones per class), under its name and
    epsilon, enlarged x2: the grid of DP samples per class at each epsilon."""
    from PIL import Image, ImageDraw

    tiles = []
    for r in rows:
        png = Path(r.get("folder", "")) / "class_check.png"
        if not png.exists():
            continue
        grid = Image.open(png).convert("L")
        grid = grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST)
        tile = Image.new("L", (grid.width, grid.height + 14), 255)
        tile.paste(grid, (0, 14))
        eps = "not DP" if r["epsilon"] is None else f"eps {r['epsilon']:.2f}"
        ImageDraw.Draw(tile).text((2, 1), f"{r['run']} ({eps})", fill=0)
        tiles.append(tile)
    if not tiles:
        return
    cols = 2
    w, h = max(t.width for t in tiles), max(t.height for t in tiles)
    sheet = Image.new("L", (cols * w + (cols - 1) * 6, -(-len(tiles) // cols) * (h + 6)), 255)
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * (w + 6), (i // cols) * (h + 6)))
    sheet.save(path)


def save(out: Path, args, rows: list[dict]) -> None:
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str) + "\n")
    (out / "table.md").write_text(markdown_table(rows) + "\n")


# Settings that must match for a row of an earlier invocation to stand in this table.
SAME_SETTINGS = ("examples", "config", "set", "steps", "clip", "unit", "batch", "width", "noise_dim", "eval_epochs",
                 "synthetic", "bootstrap", "seed", "public_patients", "public_steps", "public_model", "finetune_set")


def reusable_rows(results: Path, args) -> dict:
    if not results.exists():
        return {}
    earlier = json.loads(results.read_text())
    if any(earlier["args"].get(k) != json.loads(json.dumps(getattr(args, k), default=str)) for k in SAME_SETTINGS):
        print(f"{results}: other settings, nothing reused", flush=True)
        return {}
    return {row["run"]: row for row in earlier["rows"]}


def cost(row: dict, base: float) -> tuple[str, str]:
    """(s/step, x non-DP) as text; '-' for a row that trained nothing in this table (the public model)."""
    if row["s_per_step"] is None:
        return "-", "-"
    return f"{row['s_per_step']:.3f}", f"{row['s_per_step'] / base:.2f}"


def with_ci(value, ci, spec=".2f", ci_spec: str | None = None) -> str:
    """value [lo, hi], the interval in ci_spec (default: spec); '-' when there is no value."""
    if value is None:
        return "-"
    lo, hi = (ci or [None, None])[:2]
    ci_spec = ci_spec or spec
    return format(value, spec) + (f" [{lo:{ci_spec}}, {hi:{ci_spec}}]" if lo is not None and hi is not None else "")


def auc_with_ci(attack: dict) -> str:
    return with_ci(attack.get("auc"), attack.get("auc_ci"), ".3f", ".2f")


def markdown_table(rows: list[dict]) -> str:
    """The README's table: one line per run."""
    base = rows[0]["s_per_step"]
    lines = ["| run | ε (δ) | FD ratio [95% CI] | FRD ratio | TSTR bal. acc. (TRTR) | class check "
             "| strongest attack AUC, unit [95% CI] | per patient | s/step | × non-DP |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        eps = ("– (not DP)" if r["delta"] is None else "∞ (no noise)" if r["epsilon"] is None
               else f"{r['epsilon']:.2f} ({r['delta']:.0e})")
        lines.append(f"| {r['run']} | {eps} | {with_ci(r['fid_ratio'], r.get('fid_ratio_ci'), '.1f')} | "
                     f"{with_ci(r.get('frd_ratio'), r.get('frd_ratio_ci'), '.1f')} | "
                     f"{fmt(r['tstr_bacc'])} ({fmt(r['trtr_bacc'])}) | "
                     f"{fmt(r['class_check'])} | {auc_with_ci(r['unit_attack'])} | "
                     f"{auc_with_ci(r['patient_attack'])} | {' | '.join(cost(r, base))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
