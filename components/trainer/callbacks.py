"""Monitoring hooks of the training loop: TensorBoard scalars and sample grids, stats.jsonl, a progress line."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf


class TrainingMonitor:
    """Writes the same scalars to TensorBoard (``logs/``), ``stats.jsonl`` and the console.

    On a resumed run, lines of ``stats.jsonl`` and TensorBoard events past the restored step (written after the
    last checkpoint by the killed run) are dropped first, so both hold every logged step exactly once.
    """

    def __init__(self, out_dir: Path, *, total_steps: int, global_batch: int, start_step: int,
                 constants: dict[str, float], log=print):
        self.out_dir = Path(out_dir)
        self.total_steps, self.global_batch, self.log = total_steps, global_batch, log
        self.constants = constants  # logged with every line (learning rates)
        self.stats_path = self.out_dir / "stats.jsonl"
        _truncate_stats(self.stats_path, start_step)
        _truncate_events(self.out_dir / "logs", start_step)  # before this run's writer opens its own file
        self.writer = tf.summary.create_file_writer(str(self.out_dir / "logs"))
        self._last = (start_step, time.perf_counter(), time.process_time())

    def scalars(self, step: int, values: dict[str, float]) -> dict:
        now, cpu = time.perf_counter(), time.process_time()
        done_steps, elapsed = step - self._last[0], now - self._last[1]
        cpu_per_step = (cpu - self._last[2]) / done_steps if done_steps > 0 else 0.0
        self._last = (step, now, cpu)
        rate = done_steps * self.global_batch / elapsed if elapsed > 0 else 0.0
        # cpu_s_per_step: CPU time of this process (all threads) per step since the last line; with images_per_s
        # it tells a slow step (CPU busy) from a starved one (CPU idle: input pipeline, another process).
        row = {"step": step, **{k: float(v) for k, v in values.items()}, **self.constants,
               "images_per_s": round(rate, 2), "cpu_s_per_step": round(cpu_per_step, 4)}
        with self.writer.as_default(step=step):
            for key, value in row.items():
                if key != "step":
                    tf.summary.scalar(key, value)
        with open(self.stats_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        eta = (self.total_steps - step) * self.global_batch / rate if rate > 0 else float("nan")
        self.log(f"step {step}/{self.total_steps}  d_loss {row['d_loss']:.3f}  g_loss {row['g_loss']:.3f}  "
                 f"d_real_acc {row['d_real_acc']:.2f}  cls_acc_fake {row['cls_acc_fake']:.2f}  "
                 f"{rate:.1f} img/s  ETA {eta:.0f}s" + (f"  epsilon {row['dp_epsilon']:.2f} (RDP)"
                                                         if "dp_epsilon" in row else ""))
        return row

    def sample_grid(self, step: int, images: np.ndarray, class_names, per_class: int) -> Path:
        """images [C * per_class, H, W, K] ordered by class: one row per class, the middle slice of each."""
        grid = make_grid(images, len(class_names), per_class)
        with self.writer.as_default(step=step):
            tf.summary.image("samples/all_classes", grid[None, :, :, None], step=step)
            h = images.shape[1]
            for c, name in enumerate(class_names):
                tf.summary.image(f"samples/{name}", grid[None, c * h:(c + 1) * h, :, None], step=step)
        self.writer.flush()
        path = self.out_dir / "logs" / f"samples-{step:06d}.png"
        from PIL import Image
        Image.fromarray((grid * 255).round().astype(np.uint8)).save(path)
        return path

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def make_grid(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """[rows * cols, H, W, K] in [-1, 1] -> [rows * H, cols * W] in [0, 1] (middle slice)."""
    n, h, w, k = images.shape
    mid = np.clip((images[..., k // 2] + 1.0) / 2.0, 0.0, 1.0)
    return mid.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)


def _truncate_stats(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _truncate_events(logs: Path, step: int) -> None:
    """Rewrite each TensorBoard event file without the events of steps after ``step`` (a killed run's last
    minutes, which the resumed run logs again). Files are replaced atomically (write aside, then rename)."""
    from tensorflow.core.util import event_pb2

    for path in sorted(logs.glob("events.out.tfevents.*")) if logs.is_dir() else ():
        kept, dropped = [], 0
        for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            if event_pb2.Event.FromString(raw).step > step:
                dropped += 1
            else:
                kept.append(raw)
        if not dropped:
            continue
        aside = path.with_name(path.name + ".truncating")
        with tf.io.TFRecordWriter(str(aside)) as writer:
            for raw in kept:
                writer.write(raw)
        aside.replace(path)


def read_stats(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
