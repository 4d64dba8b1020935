"""ImageNet-size data paths on this machine: listing a class-folder tree, and getting decoded batches to training.

Listing: a tree of ``--files`` empty ``.JPEG`` files in ``--folders`` class folders (ImageNet train: 1,281,167
in 1,000), listed by the plain walk (``scan_class_folders``: readdir + one stat per file) and by
``list_class_folders`` with a stored listing (``check``: stat per file, no readdir; ``trust``: one stat per
folder), each ``--repeats`` times on a warm file-system cache. Reference: the walk.

Loaders: ``gpu_training.decoding_rows`` on a generated JPEG tree at ``--image-size`` px (4:3 images a little
larger than the resize target, as ``benchmarks/gpu.py`` makes them): PIL in DataLoader workers
(``image_source=files``), ``torchvision.io.decode_jpeg`` in the workers, building the pixel cache, reading the
pixel cache (``image_source=cache``). Reference: PIL.

    python benchmarks/bench_data_paths.py                       # 200,000 files; 2,560 images at 224 px
    python benchmarks/bench_data_paths.py --files 1281167 --folders 1000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # helpers; this checkout's visreps
from bench_alignment_common import machine_line, table  # noqa: E402
from gpu_training import Sizes, decoding_rows, write_jpeg_tree  # noqa: E402

import torch  # noqa: E402

from visreps.data.images import scan_class_folders  # noqa: E402
from visreps.data.listing import list_class_folders  # noqa: E402


def empty_tree(root: Path, n_files: int, n_folders: int) -> Path:
    """``n_files`` empty ``.JPEG`` files spread over ``n_folders`` class folders."""
    for folder in range(n_folders):
        (root / f"n{folder:08d}").mkdir(parents=True)
    for index in range(n_files):
        (root / f"n{index % n_folders:08d}" / f"n{index % n_folders:08d}_{index}.JPEG").touch()
    return root


def listing_rows(root: Path, repeats: int, store: Path) -> list[list[str]]:
    def median_seconds(work) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    walk = median_seconds(lambda: scan_class_folders(root))
    started = time.perf_counter()
    list_class_folders(root, cache_folder=store, listing="rescan")
    first = time.perf_counter() - started
    rows = [["plain walk (scan_class_folders: readdir + stat per file), reference", f"{walk:.2f}", "1.0×"],
            ["list_class_folders, first call (walk + store the listing)", f"{first:.2f}", f"{walk / first:.1f}×"]]
    for mode, label in (("check", "stored listing, listing=check (stat per file, no readdir; default)"),
                        ("trust", "stored listing, listing=trust (stat per class folder)")):
        seconds = median_seconds(lambda: list_class_folders(root, cache_folder=store, listing=mode))
        rows.append([label, f"{seconds:.2f}", f"{walk / seconds:.1f}×"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=40, help="the JPEG tree holds batch × batches images")
    parser.add_argument("--workers", type=int, default=None, help="loader processes (default: the CPU count)")
    parser.add_argument("--skip-listing", action="store_true")
    parser.add_argument("--skip-loaders", action="store_true")
    args = parser.parse_args(argv)
    workers = args.workers if args.workers is not None else os.cpu_count() or 2
    print(machine_line() + f"; torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory(prefix="visreps-data-paths-") as scratch:
        os.environ["VISREPS_HOME"] = str(Path(scratch) / "visreps-home")  # the pixel cache: scratch
        if not args.skip_listing:
            started = time.perf_counter()
            root = empty_tree(Path(scratch) / "listing", args.files, args.folders)
            print(f"\nListing {args.files:,} files in {args.folders:,} folders (made in "
                  f"{time.perf_counter() - started:.0f} s), warm cache, median of {args.repeats}")
            store = Path(scratch) / "listings"
            store.mkdir()
            print(table(listing_rows(root, args.repeats, store), ["path", "seconds", "vs walk"]))
        if not args.skip_loaders:
            n_images = args.batch * args.batches
            tree = write_jpeg_tree(Path(scratch) / "jpeg", n_images, args.image_size, threads=max(2, workers))
            sizes = Sizes("custom_cnn", args.image_size, 10, args.batch, args.batches, 3, workers, 0, 0)
            rows, _ = decoding_rows(tree, sizes, torch.device("cpu"), [])
            print(f"\nLoaders alone: {n_images:,} JPEGs, uint8 batches of {args.batch} at {args.image_size} px, "
                  f"{workers} workers, clock from batch {sizes.skip}")
            print(table(rows, ["path", "source", "images/s", "vs PIL", "pixels vs PIL (grey levels)"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
