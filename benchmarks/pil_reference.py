"""CPU ms per image of the training recipe: keras_spvit's tf.data work beside a timm-like loader.

Usage (the pipelines are tf.data and PIL, so the Keras backend does not matter):

    KERAS_BACKEND=tensorflow python benchmarks/pil_reference.py \\
        [--images 96] [--image-size 224] [--repeats 7] [--dir DIR] [--json out.json]

Issue #10 asks for an input pipeline "level with timm's loader". timm itself
cannot be imported next to the CPU torch build (`../shared/NOTES.md`), so
this script re-creates the per-image work of timm's training loader with
the same libraries timm's workers use, PIL and numpy, for the `spvit`
recipe (`rand-m9-mstd0.5-inc1`, random erasing 0.25, pixel mode):

- decode: `Image.open(...).convert("RGB")` (timm's image-folder loader);
- random resized crop: torchvision's box (scale 0.08-1, ratio 3/4-4/3,
  ten attempts, central fallback), then `Image.resize((size, size),
  BICUBIC, box=...)` (antialiased, as torchvision's PIL path);
- flip with probability 0.5 (`Image.transpose`);
- RandAugment: two operations drawn uniformly from timm's
  `_RAND_INCREASING_TRANSFORMS`, each applied with probability 0.5 at
  magnitude `gauss(9, 0.5)` clipped to [0, 10], the argument from
  `keras_spvit.data.rand_augment.level_to_arg` (timm's `_*_level_to_arg`,
  random signs included), applied with the PIL call timm makes
  (`ImageOps.autocontrast` / `equalize` / `invert` / `posterize` /
  `solarize`, a `point` table for SolarizeAdd, `ImageEnhance.*.enhance`,
  `Image.rotate` and `Image.transform(AFFINE)` with bicubic resampling and
  the ImageNet-mean fill);
- then either `"cpu"`: ToTensor (`/ 255` to float32 CHW), Normalize and
  timm's RandomErasing (N(0, 1) per pixel) in numpy, as timm's loader does
  without its prefetcher; or `"uint8"`: a uint8 CHW array, as timm's loader
  hands batches to its CUDA prefetcher, which normalises and erases on the
  GPU (work the CPU does not pay).

`keras_spvit` rows run what `image_folder_dataset`'s training map runs per
example (`tf.io.decode_jpeg`, `TrainAugment.normalized`, `erase`) inside a
`tf.data` map, one private thread, synchronously (nothing computed ahead in
the background while another row is timed).

Rows (`full`: the recipe; `off`: crop, flip, normalisation only):
    keras_spvit full / off, pil cpu full / off, pil uint8 full / off.
Method: everything on ONE thread in ONE process (TensorFlow's pools and
the tf.data map on one thread; PIL and numpy are single-threaded), the rows
interleaved within every repeat over the same `--images` JPEGs; `cpu_ms` is
the median over repeats of process CPU time per image. Two-core throughput
is then about twice the inverse for every row (the tf.data map runs two
examples at a time, timm's DataLoader two workers). JPEGs: the generated
ImageNet-like folder of `benchmarks/input_pipeline.py` (500 x 375, q90),
or `--dir`.

`main(argv)` returns the rows for tests.
"""

import argparse
import glob
import json
import math
import os
import random
import statistics
import sys
import time

import numpy as np

FILL = (124, 116, 104)  # timm's img_mean for ImageNet: round(255 * mean)
MEAN = np.float32([0.485, 0.456, 0.406]).reshape(3, 1, 1)
STD = np.float32([0.229, 0.224, 0.225]).reshape(3, 1, 1)
ROWS = ("keras_spvit full", "keras_spvit off", "pil cpu full", "pil cpu off",
        "pil uint8 full", "pil uint8 off")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring for details.",
    )
    p.add_argument("--images", type=int, default=96, help="JPEGs per repeat and row")
    p.add_argument("--folder-images", type=int, default=512,
                   help="JPEGs in the generated folder (input_pipeline.py's default: shared)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--source-size", default="500x375", help="WIDTHxHEIGHT of generated JPEGs")
    p.add_argument("--dir", default=None, help="image folder to use or fill")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    if min(args.images, args.image_size, args.repeats) < 1:
        p.error("--images, --image-size and --repeats must be >= 1")
    if args.folder_images < args.images:
        p.error("--folder-images must be >= --images")
    return args


def jpeg_files(args):
    """`--images` JPEG paths: input_pipeline.py's generated folder (or `--dir`)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/: no package
    import input_pipeline as pipeline
    folder_args = pipeline.parse_args([
        "--images", str(max(args.folder_images, 8)), "--classes", "8", "--batch-size", "8",
        "--source-size", args.source_size, "--seed", str(args.seed),
        *(["--dir", args.dir] if args.dir else []),
    ])
    root, kb, _ = pipeline.jpeg_folder(folder_args)
    files = sorted(glob.glob(os.path.join(root, "*", "*")))
    files = [f for f in files if f.lower().endswith((".jpg", ".jpeg"))][: args.images]
    if not files:
        raise SystemExit(f"no JPEGs in {root}")
    return files, kb


# === timm-like PIL loader ===


def pil_operations():
    """`{timm name: fn(image, arg)}`: the PIL call timm makes for each operation."""
    from PIL import Image, ImageEnhance, ImageOps

    def affine(matrix):
        return lambda im, a: im.transform(im.size, Image.AFFINE, matrix(im, a), Image.BICUBIC,
                                          fillcolor=FILL)

    def solarize_add(im, a):
        table = [min(255, i + int(a)) if i < 128 else i for i in range(256)]
        return im.point(table * 3)

    def posterize(im, a):
        # 0 bits (magnitude 10) is black, as PIL gave until 9.x (Pillow 10+ raises).
        if a >= 8:
            return im
        return ImageOps.posterize(im, int(a)) if a >= 1 else im.point([0] * 768)

    enhance = {name: getattr(ImageEnhance, name) for name in
               ("Color", "Contrast", "Brightness", "Sharpness")}
    ops = {
        "AutoContrast": lambda im, a: ImageOps.autocontrast(im),
        "Equalize": lambda im, a: ImageOps.equalize(im),
        "Invert": lambda im, a: ImageOps.invert(im),
        "Rotate": lambda im, a: im.rotate(a, resample=Image.BICUBIC, fillcolor=FILL),
        "PosterizeIncreasing": posterize,
        "SolarizeIncreasing": lambda im, a: ImageOps.solarize(im, a),
        "SolarizeAdd": solarize_add,
        "ShearX": affine(lambda im, a: (1, a, 0, 0, 1, 0)),
        "ShearY": affine(lambda im, a: (1, 0, 0, a, 1, 0)),
        "TranslateXRel": affine(lambda im, a: (1, 0, a * im.size[0], 0, 1, 0)),
        "TranslateYRel": affine(lambda im, a: (1, 0, 0, 0, 1, a * im.size[1])),
    }
    for name, enhancer in enhance.items():
        ops[f"{name}Increasing"] = lambda im, a, enhancer=enhancer: enhancer(im).enhance(a)
    return ops


def _crop_box(width, height, rng):
    # torchvision's RandomResizedCrop.get_params (scale 0.08-1, ratio 3/4-4/3).
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, (width + side) // 2, (height + side) // 2


def _erase(x, rng, np_rng):
    # timm's RandomErasing(probability 0.25, mode "pixel", one box) on a normalised CHW array.
    if rng.random() > 0.25:
        return x
    channels, height, width = x.shape
    for _ in range(10):
        target = height * width * rng.uniform(0.02, 1 / 3)
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
        h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if w < width and h < height:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            x[:, top:top + h, left:left + w] = np_rng.standard_normal((channels, h, w), np.float32)
            return x
    return x


class PILLoader:
    """The per-image work of timm's training loader for the spvit recipe (see the docstring)."""

    def __init__(self, size, augment, to_uint8, seed=0):
        from keras_spvit.data.rand_augment import RAND_INCREASING_TRANSFORMS, level_to_arg

        self.size, self.augment, self.to_uint8 = size, augment, to_uint8
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.ops = pil_operations()
        missing = set(RAND_INCREASING_TRANSFORMS) - set(self.ops)
        if missing:
            raise SystemExit(f"no PIL operation for {sorted(missing)}")
        self.names = list(RAND_INCREASING_TRANSFORMS)
        # timm's arguments on a grid of magnitudes (a table: no TensorFlow per image).
        self.levels = np.round(np.arange(0, 10.01, 0.25), 2)
        self.args = {
            (name, sign): [float(level_to_arg(name, m, sign)) for m in self.levels]
            for name in self.names for sign in (False, True)
        }

    def _argument(self, name):
        magnitude = min(10.0, max(0.0, self.rng.gauss(9.0, 0.5)))
        index = int(round(magnitude / 0.25))
        return self.args[(name, self.rng.random() > 0.5)][index]

    def __call__(self, path):
        from PIL import Image

        image = Image.open(path).convert("RGB")
        box = _crop_box(*image.size, self.rng)
        image = image.resize((self.size, self.size), Image.BICUBIC, box=box)
        if self.rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if self.augment:
            for _ in range(2):
                name = self.rng.choice(self.names)
                if self.rng.random() < 0.5:
                    image = self.ops[name](image, self._argument(name))
        pixels = np.asarray(image)
        if self.to_uint8:
            return np.ascontiguousarray(pixels.transpose(2, 0, 1))
        x = (pixels.transpose(2, 0, 1).astype(np.float32) / 255.0 - MEAN) / STD
        return _erase(x, self.rng, self.np_rng) if self.augment else x


# === keras_spvit ===


def spvit_iterator(files, size, augment, tf):
    """An endless one-thread tf.data map of the training example step over `files`."""
    from keras_spvit.data.train_augment import TrainAugment
    from keras_spvit.data.transforms import taken_branch_only

    recipe = TrainAugment(randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.25) if augment \
        else TrainAugment()

    @taken_branch_only
    def example(path, seed):
        image = recipe.normalized(tf.io.decode_jpeg(tf.io.read_file(path), channels=3), size, seed)
        image = recipe.erase(image, seed)
        return tf.reduce_sum(image[:1, :1])  # one value per image: nothing is optimised away

    dataset = tf.data.Dataset.from_tensor_slices(files).repeat()
    dataset = tf.data.Dataset.zip((dataset, tf.data.Dataset.random(seed=1).batch(2)))
    dataset = dataset.map(lambda p, s: example(p, tf.cast(s, tf.int64)))
    # Synchronous: every element computed inside `next`, none ahead in a
    # background thread (whose CPU time would land in the PIL rows' timing).
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    optimization = options.experimental_optimization
    optimization.map_and_batch_fusion = False
    optimization.map_parallelization = False
    optimization.inject_prefetch = False
    it = iter(dataset.batch(len(files)).with_options(options))
    next(it)  # start-up and warm-up, untimed
    return it


def measure(files, args, tf):
    runners = {}
    for augment, tag in ((True, "full"), (False, "off")):
        it = spvit_iterator(files, args.image_size, augment, tf)
        runners[f"keras_spvit {tag}"] = lambda it=it: next(it)
        for mode in ("cpu", "uint8"):
            loader = PILLoader(args.image_size, augment, mode == "uint8", args.seed)
            runners[f"pil {mode} {tag}"] = lambda loader=loader: [loader(f) for f in files]
            runners[f"pil {mode} {tag}"]()  # warm-up (PIL's plugins, first allocations)
    samples = {name: [] for name in ROWS}
    for _ in range(args.repeats):
        for name in ROWS:
            start = time.process_time()
            runners[name]()
            samples[name].append((time.process_time() - start) / len(files) * 1e3)
    return samples


def one_thread(tf):
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        return True
    except RuntimeError:
        return False


def main(argv=None):
    args = parse_args(argv)
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise SystemExit("benchmarks/pil_reference.py needs Pillow (pip install pillow)") from None
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    threads = one_thread(tf)
    files, kb = jpeg_files(args)
    print(f"{len(files)} JPEGs (mean {kb:.0f} KB), {args.image_size} px, repeats={args.repeats}, "
          f"one thread={threads}, tf={tf.__version__}, load={os.getloadavg()[0]:.2f}", flush=True)
    samples = measure(files, args, tf)
    rows = [{"name": name, "cpu_ms": statistics.median(samples[name]),
             "cpu_ms_repeats": samples[name]} for name in ROWS]
    by_name = {r["name"]: r["cpu_ms"] for r in rows}
    print(f"{'row':<20}{'CPU ms/image':>14}   repeats")
    for r in rows:
        print(f"{r['name']:<20}{r['cpu_ms']:>14.3f}   {[round(v, 2) for v in r['cpu_ms_repeats']]}")
    ratios = {
        "spvit full / pil cpu full": by_name["keras_spvit full"] / by_name["pil cpu full"],
        "spvit full / pil uint8 full": by_name["keras_spvit full"] / by_name["pil uint8 full"],
        "spvit off / full": by_name["keras_spvit off"] / by_name["keras_spvit full"],
        "pil cpu off / full": by_name["pil cpu off"] / by_name["pil cpu full"],
        "pil uint8 off / full": by_name["pil uint8 off"] / by_name["pil uint8 full"],
    }
    print("CPU-time ratios (< 1: the first costs less per image): "
          + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "ratios": ratios,
                       "meta": {"images": len(files), "image_size": args.image_size,
                                "repeats": args.repeats, "one_thread": threads}}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
