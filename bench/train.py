"""Training throughput: vugan's trainer vs a plain Keras loop, same model, same process, interleaved repeats.

The plain loop is what one writes from the TensorFlow DCGAN tutorial: numpy arrays -> from_tensor_slices ->
shuffle -> batch (no prefetch, no caching), and a @tf.function GradientTape step that calls D separately on the
real and on the fake batch, then G and D again for the generator (3 D and 2 G forwards: the reference study's
per-batch sequence), no XLA. The trainer runs its real code path as a user gets it (TFRecords -> tf.data, the
strategy `vugan train` picks, the compiled distributed step, EMA off, logging every chunk, trainer.xla = 'auto').
Both run in this process after pipeline/tf_env.py has set oneDNN and the thread pools, as the vugan command does.

Printed per loop: images/s and CPU-seconds per step (medians over all chunks after each repeat's first, which
includes tracing), the ratio trainer / plain loop (within each repeat, then the median: on a shared machine the
load moves between repeats; CPU-seconds per step hardly depend on it), and FLOP-based efficiency: the analytic FLOPs of one training
image (4 G + 8 D forward-equivalents: the reference sequence with backward = 2 forwards) times images/s, against
a float32 matmul measured in the same run (this machine's attainable rate), each loop with the FLOPs of the models it
trains (with --set, the trainer's recipe). No ratio against a figure quoted from another machine or time is printed:
a ratio is measured side by side or not at all (torch is not a dependency, so the study's PyTorch loop is not run).

    .venv/bin/python bench/train.py --width 32 --repeats 3
    .venv/bin/python bench/train.py --width 128 --steps 12 --chunk 3 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from vugan.pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)

tf_env.configure()

def forward_flops(model) -> int:
    """Multiply-adds x 2 of one example through the model's conv, transposed-conv and dense layers."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, cin = layer.input.shape
            kh, kw = layer.kernel_size
            total += 2 * h * w * kh * kw * cin * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, _ = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * h * w * kh * kw * layer.input.shape[-1] * layer.filters
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return total


def training_flops_per_image(g, d) -> float:
    """D phase: G fwd, D fwd on real and fake, D backward on both; G phase: G fwd, D fwd+backward (to its input),
    G backward. Backward = 2 forwards. = 4 G + 8 D forwards (10.1 GFLOP at s = 128, as the study note says)."""
    return 4 * forward_flops(g) + 8 * forward_flops(d)


def matmul_gflops(seconds: float = 3.0, n: int = 1024) -> float:
    """This machine's attainable float32 rate now (same threads, same load as the loops): n x n matmuls."""
    import tensorflow as tf

    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    step = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    float(step(a, b))
    rates, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        float(step(a, b))
        rates.append(2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def plain_loop(g, d, images, labels, *, batch, noise_dim, num_classes, steps, chunk):
    import keras
    import tensorflow as tf

    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    g_opt, d_opt = keras.optimizers.Adam(1e-4, beta_1=0.5), keras.optimizers.Adam(1e-4, beta_1=0.5)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(1000).batch(batch, drop_remainder=True).repeat()

    @tf.function
    def train_step(real, y):
        z = tf.random.normal([batch, noise_dim])
        fake_y = tf.random.uniform([batch], 0, num_classes, tf.int32)
        fake = g([z, fake_y], training=True)
        with tf.GradientTape() as tape:
            r_rf, r_cls = d(real, training=True)
            f_rf, f_cls = d(fake, training=True)
            d_loss = (bce(tf.ones_like(r_rf), r_rf) + bce(tf.zeros_like(f_rf), f_rf)
                      + ce(y, r_cls) + ce(fake_y, f_cls))
        d_opt.apply_gradients(zip(tape.gradient(d_loss, d.trainable_variables), d.trainable_variables))
        z = tf.random.normal([batch, noise_dim])
        with tf.GradientTape() as tape:
            f_rf, f_cls = d(g([z, fake_y], training=True), training=True)
            g_loss = bce(tf.ones_like(f_rf), f_rf) + ce(fake_y, f_cls)
        g_opt.apply_gradients(zip(tape.gradient(g_loss, g.trainable_variables), g.trainable_variables))
        return d_loss, g_loss

    rates, cpu, it = [], [], iter(ds)
    for _ in range(steps // chunk):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(chunk):
            real, y = next(it)
            out = train_step(real, y)
        float(out[0])  # wait for the last step
        rates.append(chunk * batch / (time.perf_counter() - t))
        cpu.append((time.process_time() - c) / chunk)
    return rates[1:], cpu[1:]  # the first chunk includes tracing


def trainer_loop(info, tmp: Path, args, *, xla, tag: str):
    from vugan.components.trainer import core
    from vugan.components.trainer.callbacks import read_stats
    from vugan.components.trainer.run import make_strategy
    from vugan.pipeline.config import load_config

    cfg = load_config(None, [f"trainer.width={args.width}", f"trainer.batch_size={args.batch}",
                             f"trainer.steps={args.steps}", f"trainer.log_every={args.chunk}",
                             f"trainer.image_every={10**6}", f"trainer.checkpoint_every={10**6}",
                             f"trainer.xla={xla}", *args.set]).trainer
    out = tmp / tag
    out.mkdir()
    strategy = make_strategy(1)
    with strategy.scope():
        gan = core.build_gan(cfg, info, global_batch=args.batch)
    core.train(strategy, gan, info, cfg, out, log=lambda m: None)
    rows = read_stats(out / "stats.jsonl")[1:]  # the first chunk includes tracing
    # FLOPs of the recipe actually trained (--set may change G and D), not of the plain loop's models.
    flops = training_flops_per_image(gan.generator, gan.discriminator)
    return [r["images_per_s"] for r in rows], [r["cpu_s_per_step"] for r in rows], flops


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--slices", type=int, default=9)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=60, help="steps per loop and repeat, measured in chunks of --chunk")
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every loop (medians over all)")
    p.add_argument("--units", type=int, default=64, help="training units per class in the fixture")
    p.add_argument("--xla", action="store_true", help="also time the trainer with trainer.xla = true")
    p.add_argument("--set", action="append", default=[], metavar="trainer.KEY=VALUE",
                   help="extra trainer override for the trainer loop (e.g. trainer.reuse_fakes=true)")
    args = p.parse_args(argv)

    import keras

    from vugan.components import schema
    from vugan.components.trainer.data import inspect_examples
    from support.examples import make_examples_artifact
    from vugan.models import acgan

    shape = (args.size, args.size, args.slices)
    tmp = Path(tempfile.mkdtemp(prefix="vugan-bench-"))
    root = make_examples_artifact(tmp / "examples", n_per_class=args.units, shape=shape)
    info = inspect_examples(root)
    env = tf_env.configure()
    print(f"model s={args.width}, {shape}, batch {args.batch}, {info.num_train} units; {args.steps} steps per loop "
          f"in chunks of {args.chunk}, {args.repeats} interleaved repeats; "
          f"oneDNN {env['TF_ENABLE_ONEDNN_OPTS']}, threads intra {env['TF_NUM_INTRAOP_THREADS']} "
          f"inter {env['TF_NUM_INTEROP_THREADS']}; extra: {args.set or 'none'}")

    arrays = schema.load_split(str(root), "train")
    arch = acgan.ArchConfig(image_shape=shape, num_classes=3, width=args.width)
    keras.utils.set_random_seed(0)
    g, d = acgan.build_generator(arch), acgan.build_discriminator(arch)
    flops = {"plain Keras loop": training_flops_per_image(g, d)}

    loops = {"trainer": "auto", **({"trainer (xla)": "true"} if args.xla else {})}
    rates: dict[str, list] = {k: [] for k in [*loops, "plain Keras loop"]}
    cpu: dict[str, list] = {k: [] for k in rates}
    peaks, per_repeat = [], []  # per repeat: {loop: median images/s}, for load-paired ratios
    for r in range(args.repeats):
        start = {k: len(v) for k, v in rates.items()}
        for name, xla in loops.items():
            got = trainer_loop(info, tmp, args, xla=xla, tag=f"{name.replace(' ', '_')}-{r}")
            rates[name] += got[0]
            cpu[name] += got[1]
            flops[name] = got[2]
        got = plain_loop(g, d, arrays.images, arrays.class_ids, batch=args.batch, noise_dim=100, num_classes=3,
                         steps=args.steps, chunk=args.chunk)
        rates["plain Keras loop"] += got[0]
        cpu["plain Keras loop"] += got[1]
        peaks.append(matmul_gflops())
        per_repeat.append({k: statistics.median(v[start[k]:]) for k, v in rates.items()})
    peak = statistics.median(peaks)
    print(f"float32 matmul now {peak:.1f} GFLOP/s (repeats: {', '.join(f'{x:.1f}' for x in peaks)})")
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in rates.items():
        achieved = med[k] * flops[k] / 1e9
        print(f"{k:18s} {med[k]:8.1f} images/s  {flops[k] / 1e9:6.3f} GFLOP/image  {statistics.median(cpu[k]):6.3f} CPU-s/step  "
              f"{achieved:6.1f} GFLOP/s = {achieved / peak:.0%} of matmul  (chunks: {', '.join(f'{x:.1f}' for x in v)})")
    for k in loops:
        # The machine may be shared: the ratio is taken within each repeat (neighbouring in time), then the median.
        paired = [r[k] / r["plain Keras loop"] for r in per_repeat]
        print(f"ratio {k} / plain Keras loop = {statistics.median(paired):.2f} images/s (per repeat: "
              f"{', '.join(f'{x:.2f}' for x in paired)}); CPU-s/step ratio "
              f"{statistics.median(cpu['plain Keras loop']) / statistics.median(cpu[k]):.2f}; achieved GFLOP/s ratio "
              f"{med[k] * flops[k] / (med['plain Keras loop'] * flops['plain Keras loop']):.2f}"
              + (" (--set changes the trained models: the GFLOP/s ratio is the like-for-like one)" if args.set else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
