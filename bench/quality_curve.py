"""Time to quality: FD-VU and FRD against HOLDOUT patients (the evaluator's own ratios, with their patient-bootstrap
95% intervals) and the gate's C2ST AUC, at every checkpoint of one training run, against training images and
CPU-seconds. The recipe comparison issue 22 asks for: realism at equal compute, not MS-SSIM or TSTR.

    .venv/bin/python bench/quality_curve.py curve runs/00001-demo/preprocess --config configs/demo.toml \
        --out /tmp/curves/demo --every 200 [--set trainer.steps=2400 ...]
    .venv/bin/python bench/quality_curve.py plot /tmp/curves/demo /tmp/curves/new --out docs/figures/curve.png
    .venv/bin/python bench/quality_curve.py table /tmp/curves/demo /tmp/curves/new

`curve` trains with `vugan train` as shipped (a subprocess; only trainer.checkpoint_every and keep_checkpoints are
set on top, so every checkpoint stays), then restores each checkpoint's sampler (the EMA generator when kept),
draws the evaluator's synthetic set (evaluator.min_synthetic, the train prior, evaluator.seed) and scores it in the
vu-encoder space (FD-VU) and the radiomics space (FRD) exactly as `vugan evaluate` does (core.fidelity_in_space),
plus the C2ST in the vu space (core.two_sample_in_space). One JSON line per checkpoint goes to OUT/curve.jsonl, a
per-class grid of the last checkpoint to OUT/grid.png, and a table is printed. CPU-seconds at a step are the sum of
the trainer's logged cpu_s_per_step up to it (the trainer process's own CPU time, so another process's load does not
count), and the trainer's total CPU time is printed beside them.

`plot` draws FD-VU and FRD ratio (log scale, with intervals) against training images for several curve folders on
one chart; the dashed line is 1 (as good as new real patients).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from vugan.pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)

tf_env.configure()
VUGAN = str(Path(sys.executable).with_name("vugan"))


def train(examples: Path, config: Path, out: Path, every: int, sets: list[str]) -> dict:
    """`vugan train` as a user runs it, keeping every `every`-th checkpoint; returns wall and CPU seconds."""
    args = [VUGAN, "train", "--config", str(config), "--examples", str(examples), "--out", str(out / "train")]
    for s in [*sets, f"trainer.checkpoint_every={every}", "trainer.keep_checkpoints=1000"]:
        args += ["--set", s]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(out / "train.log", "w") as fh:
        proc = subprocess.run(args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=os.environ)
    if proc.returncode != 0:
        raise SystemExit(f"vugan train failed ({proc.returncode}); see {out / 'train.log'}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": time.perf_counter() - started,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def cumulative_cpu(stats_file: Path) -> dict[int, float]:
    """step -> CPU-seconds of training up to it (cpu_s_per_step is logged every log_every steps, averaged)."""
    rows = [json.loads(line) for line in stats_file.read_text().splitlines() if line.strip()]
    out, total, last_step = {}, 0.0, 0
    for r in rows:
        if "cpu_s_per_step" not in r:
            continue
        total += r["cpu_s_per_step"] * (r["step"] - last_step)
        last_step = r["step"]
        out[r["step"]] = total
    return out


class Scorer:
    """The evaluator's fidelity ratios and C2ST for one synthetic set; the real splits are embedded once."""

    def __init__(self, examples: Path, ecfg):
        from vugan.components.evaluator import core
        from vugan.components.evaluator.features.embeddings import radiomics_embedder, vu_embedder
        from vugan.components.evaluator.run import load_inputs

        manifest, splits = load_inputs(examples)
        self.class_names = tuple(manifest["properties"]["class_names"])
        self.train, self.holdout = splits["train"], splits["holdout"]
        self.cfg = ecfg
        self.embedders = [vu_embedder(), radiomics_embedder(ecfg.batch_size)]
        self.real = {e.key: {"train": e(self.train.images), "holdout": e(self.holdout.images)} for e in self.embedders}
        self.core = core

    def __call__(self, generate_fn) -> tuple[dict, object]:
        core, cfg = self.core, self.cfg
        syn = core.draw_synthetic(generate_fn, self.train, self.class_names, cfg.min_synthetic, cfg.seed)
        sets = {"train": self.train, "holdout": self.holdout, "synthetic": syn}
        labels = {k: v.class_ids for k, v in sets.items()}
        groups = {k: v.patients for k, v in sets.items()}
        selection = core.fair_selection(labels, groups, cfg.seed)
        used = core.synthetic_units_used(selection)
        row: dict = {}
        for emb in self.embedders:
            feats = core.whitened_on_train(emb, {**self.real[emb.key], "synthetic": emb(syn.images[used])})
            fid = core.fidelity_in_space(feats, labels, groups, self.class_names, cfg, cfg.seed, selection, used)
            hold = fid["against_holdout"]
            name = "fd_vu" if emb.key == "vu" else "frd"
            row[name] = hold["overall"]["fd_ratio"]
            row[f"{name}_ci"] = hold["overall"]["fd_ratio_ci"]
            row[f"{name}_per_class"] = {c: [v["fd_ratio"], v["fd_ratio_ci"]] for c, v in hold["per_class"].items()}
            if emb.key == "vu":
                ts = core.two_sample_in_space(feats, labels, groups, used, self.class_names, cfg.seed)
                row["c2st"] = ts["overall"]["auc"]
                row["c2st_per_class"] = {c: v.get("auc") for c, v in ts["per_class"].items()}
        return row, syn


def restore_samplers(train_dir: Path, examples: Path, config: Path, sets: list[str]):
    """Yield (step, images seen, a ModelBundle of the checkpoint's sampler) for every checkpoint, oldest first."""
    import tensorflow as tf

    from vugan.components.trainer import core
    from vugan.components.trainer.data import inspect_examples
    from vugan.models.bundle import ModelBundle
    from vugan.pipeline.config import load_config

    tcfg = load_config(config, sets).trainer
    info = inspect_examples(examples, tcfg.image_shape, allow_missing_classes=tcfg.allow_missing_classes)
    gan = core.build_gan(tcfg, info, global_batch=tcfg.batch_size)
    step, seen = tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)
    ckpt = core.make_checkpoint(gan, step, seen)
    # The evaluator's generator path (bundle.generate: its noise, its batching) on the restored weights.
    bundle = ModelBundle(generator=gan.sampler, discriminator=gan.discriminator, class_names=info.class_names,
                         image_shape=info.image_shape, noise_dim=tcfg.noise_dim, info={})
    prefixes = sorted((p.with_suffix("") for p in (train_dir / "checkpoints").glob("ckpt-*.index")),
                      key=lambda p: int(p.name.rsplit("-", 1)[1]))
    for prefix in prefixes:
        ckpt.restore(str(prefix)).expect_partial()
        yield int(step), int(seen), bundle


def curve(args) -> None:
    from vugan.components.evaluator.report.figures import class_grids
    from vugan.pipeline.config import load_config

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "train" / "artifact.json").exists():
        timing = train(Path(args.examples), Path(args.config), out, args.every, args.set)
        (out / "timing.json").write_text(json.dumps(timing) + "\n")
    timing = json.loads((out / "timing.json").read_text())
    cpu = cumulative_cpu(out / "train" / "stats.jsonl")
    scorer = Scorer(Path(args.examples), load_config(args.config, args.set).evaluator)
    rows, syn = [], None
    from vugan.models.bundle import generate

    for step, seen, bundle in restore_samplers(out / "train", Path(args.examples), Path(args.config), args.set):
        row, syn = scorer(lambda class_ids, seed: generate(bundle, class_ids, seed))
        row = {"step": step, "images": seen, "cpu_s": round(cpu.get(step, float("nan")), 1), **row}
        rows.append(row)
        print(f"step {step:>6}  images {seen:>8}  cpu-s {row['cpu_s']:>7}  FD-VU {_fmt(row, 'fd_vu')}  "
              f"FRD {_fmt(row, 'frd')}  C2ST {row['c2st']:.3f}", flush=True)
    (out / "curve.jsonl").write_text("".join(json.dumps({"label": args.label or out.name, **r}) + "\n"
                                             for r in rows))
    if syn is not None:
        grid = class_grids(scorer.train.images, scorer.train.class_ids, syn.images, syn.class_ids,
                           scorer.class_names, 6, 0)
        (out / "grid.png").write_bytes(grid.png)
    print(f"trainer: {timing['wall_s']:.0f} s wall, {timing['cpu_s']:.0f} CPU-s (process total)")


def _fmt(row: dict, key: str) -> str:
    ci = row.get(f"{key}_ci") or [float("nan")] * 2
    return f"{row[key]:6.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if row.get(key) is not None else "  n/a"


def plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for folder in args.folders:
        rows = [json.loads(x) for x in (Path(folder) / "curve.jsonl").read_text().splitlines() if x.strip()]
        label = rows[0]["label"] if rows else Path(folder).name
        for ax, key in zip(axes, ("fd_vu", "frd")):
            x = np.array([r["images"] for r in rows]) / 1000
            y = np.array([r[key] for r in rows], float)
            lo = np.array([(r[f"{key}_ci"] or [np.nan, np.nan])[0] for r in rows], float)
            hi = np.array([(r[f"{key}_ci"] or [np.nan, np.nan])[1] for r in rows], float)
            line, = ax.plot(x, y, marker="o", label=label)
            ax.fill_between(x, lo, hi, alpha=0.15, color=line.get_color())
    for ax, name in zip(axes, ("FD-VU ratio against holdout", "FRD ratio against holdout")):
        ax.set_yscale("log")
        ax.axhline(1.0, ls="--", color="grey", lw=1)
        ax.set_xlabel("training images (thousands)")
        ax.set_title(name, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


def table(args) -> None:
    """A markdown row per curve folder: the last checkpoint's ratios with their intervals, the mean of the last
    three checkpoints (one checkpoint moves by tens of percent between neighbours: the mean is the steadier
    reading), the C2ST AUC and the trainer's CPU-seconds."""
    print("| recipe | steps | images | CPU-s | FD-VU [95%] | FRD [95%] | FD-VU, FRD mean of last 3 | C2ST |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.folders:
        rows = [json.loads(x) for x in (Path(folder) / "curve.jsonl").read_text().splitlines() if x.strip()]
        last, tail = rows[-1], rows[-3:]
        mean = {k: float(np.mean([r[k] for r in tail])) for k in ("fd_vu", "frd")}
        print(f"| {last['label']} | {last['step']} | {last['images']} | {last['cpu_s']:.0f} | {_fmt(last, 'fd_vu')} "
              f"| {_fmt(last, 'frd')} | {mean['fd_vu']:.1f}, {mean['frd']:.2f} | {last['c2st']:.3f} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("curve", help="train one recipe and score every checkpoint")
    c.add_argument("examples")
    c.add_argument("--config", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--every", type=int, default=200, help="steps between scored checkpoints")
    c.add_argument("--set", action="append", default=[], help="config override, as for vugan (repeatable)")
    c.add_argument("--label", default="", help="the recipe's name on the chart (default: the out folder's name)")
    q = sub.add_parser("plot", help="several curves on one chart")
    q.add_argument("folders", nargs="+")
    q.add_argument("--out", required=True)
    t = sub.add_parser("table", help="a markdown table of several curves")
    t.add_argument("folders", nargs="+")
    args = p.parse_args(argv)
    {"curve": curve, "plot": plot, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
