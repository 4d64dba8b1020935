"""Time the demo dataset generation at a given configuration (default: the default config).

    python benchmarks/bench_demo_data.py [key=value ...]      e.g. image_size=128 n_train_images=2000

Generates into a temporary VISREPS_HOME and prints wall and CPU time of each part, then compares the
PNG encoder used by the generator with PIL's on the same images. Target: default config well under a
minute on 2 cores.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image


def main(argv: list[str]) -> None:
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in argv)}
    with tempfile.TemporaryDirectory() as home:
        os.environ["VISREPS_HOME"] = home
        from visreps.data import demo
        from visreps.data.demo import build as demo_build
        from visreps.data.demo.images import png_bytes, render_images

        timings: dict[str, tuple[float, float]] = {}
        for name in ("build_train_images", "build_brain", "build_behaviour"):
            original = getattr(demo, name)

            def timed(*args, _original=original, _name=name):
                wall, cpu = time.perf_counter(), time.process_time()
                result = _original(*args)
                timings[_name] = (time.perf_counter() - wall, time.process_time() - cpu)
                return result

            setattr(demo, name, timed)
        config = demo.DemoDataConfig(**overrides)
        wall, cpu = time.perf_counter(), time.process_time()
        made = demo.generate_demo_dataset(config, progress=False)
        total = (time.perf_counter() - wall, time.process_time() - cpu)
        size = sum(p.stat().st_size for p in Path(made.root).rglob("*") if p.is_file())
        print(f"config: {overrides or 'defaults'}; {os.cpu_count()} CPUs, {demo_build._worker_count()} threads")
        print(f"{'part':<22}{'wall s':>8}{'cpu s':>8}")
        for name, (w, c) in timings.items():
            print(f"{name:<22}{w:>8.1f}{c:>8.1f}")
        print(f"{'total':<22}{total[0]:>8.1f}{total[1]:>8.1f}   ({size / 1e6:.0f} MB on disk)")

        latents = demo.train_image_latents(config).iloc[:1000]
        images = render_images(latents, config.image_size)
        start = time.perf_counter()
        ours = png_bytes(images)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        theirs = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            theirs.append(buffer.getvalue())
        pil_s = time.perf_counter() - start
        print(f"PNG encoding of 1,000 images: visreps {ours_s * 1e3:.0f} ms ({np.mean([len(b) for b in ours]):.0f} B/image)"
              f" vs PIL {pil_s * 1e3:.0f} ms ({np.mean([len(b) for b in theirs]):.0f} B/image)")


if __name__ == "__main__":
    main(sys.argv[1:])
