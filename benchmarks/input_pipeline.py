"""Images/s of keras_spvit's training and evaluation input pipelines for a recipe.

Usage (the pipelines are tf.data, so the Keras backend does not matter):

    KERAS_BACKEND=tensorflow python benchmarks/input_pipeline.py \\
        --recipe spvit --images 512 --batch-size 32 --image-size 224 \\
        [--classes 8] [--repeats 3] [--warmup 1] [--threads N] [--seed 0] \\
        [--source-size 500x375] [--dir DIR] [--json out.json] \\
        [--only train,train_off] [--steady-epochs 2]

Data: a folder of `--images` JPEGs in `--classes` class folders, generated
once and cached (in `--dir`, or in the temp directory under a name that
encodes the parameters): ImageNet-like, 500 x 375 (width x height) at quality
90, with natural-looking content (smooth colour gradients, blotches, texture
at two scales, pixel noise, a few shapes) so that files weigh about what
ImageNet's do (~100 KB). A `--dir` that already holds class folders of images
is used as it is (real images can be measured that way).

What is timed (after `--warmup` untimed epochs of each pipeline; all
pipelines interleaved within every repeat, so slow drifts of a shared machine
hit them alike):

- pipelines (`kind="pipeline"`), as training builds them:
    train      `image_folder_dataset(training=True, augment=train_augment(recipe))`:
               the full recipe (shuffle, decode, crop, flip, RandAugment,
               erasing, normalise, batch, MixUp/CutMix if the recipe has them).
    train_batched  the same with `TrainAugment(batch_rand_augment=True)`:
               crop, flip and RandAugment's draws per example, then
               RandAugment (`RandAugment.apply_batch`), normalisation and
               erasing per batch of `--batch-size` (identical batches).
    train_idle the same with RandAugment's and erasing's draws made but no
               operation applied (the policy with `-p0`, erasing probability
               1e-9): the fixed per-image cost of the augmentation, apart
               from its operations (issue #10 profiling).
    train_off  the same with `randaugment=None, random_erasing=0` (random
               resized crop and flip only).
    eval       `image_folder_dataset(training=False)`: decode, resize, centre
               crop, normalise, batch.
  Each repeat reads each pipeline through ONE fresh iterator over
  `1 + --steady-epochs` epochs (`dataset.repeat`), and splits its time:
    per epoch (`images_per_s`, `cpu_ms`, `ratio`, `cpu_ratio`): the first
        epoch of the fresh iterator, start-up included: what a run pays when
        every epoch builds a new iterator (Keras `fit` does) on an epoch of
        `--images` images.
    start-up (`startup_s`): time from creating the iterator to its first
        batch: building and optimising the pipeline's graph (function
        instantiation of every `map`), filling the first batch. It is paid
        per ITERATOR, not per epoch of one iterator (the steady-state epochs
        below show no such cost): Keras `fit` keeps one iterator for the
        whole run when given `steps_per_epoch` (what `keras-spvit train`
        does, over the endless position stream), and builds a new one every
        epoch for a finite dataset without it (`fit(dataset, epochs=N)`).
    steady state (`steady_images_per_s`, `steady_cpu_ms`, `steady_ratio`,
        `steady_cpu_ratio`): the later epochs of the same iterator, start-up
        excluded: the throughput of a pipeline that is already running.
  Ratios are `train` (and `train_batched`, `train_idle`) / `train_off`, medians over
  repeats. Issue #10's target (>= 0.9 on the 2-core CI machine) is judged on
  the STEADY-STATE ratios: a real epoch (ImageNet: 1.28M images, 40,000
  batches of 32) pays the start-up (about a second) once, a millionth of the
  epoch, while the benchmark's epoch of 512 images pays it every few
  seconds; the per-epoch ratios are reported beside it so that the start-up
  cost stays visible (`startup_s` is its own column).
- stages (`kind="stage"`): cumulative pipelines that stop after each stage,
  without shuffle: read file, decode JPEG, crop+resize, flip, RandAugment,
  erasing, normalise, batch (and mix when the recipe mixes). The stage
  augmentations are `train_augment` of the recipe with the later stages
  switched off, so whatever `TrainAugment` does for a recipe is what is
  measured. `stage_ms` is the stage's own cost per image: the difference of
  ms/image between this cumulative pipeline and the previous one (so it can
  be slightly negative for a stage cheaper than the noise). ms/image are wall
  time per image of the parallel pipeline, not CPU time. Stages are timed
  one epoch each inside TensorFlow (`Dataset.reduce`, touching one value per
  element so that nothing is optimised away), start-up included.

`cpu_ms` is the process CPU time (every thread) per image of the same
epochs, median: less sensitive than wall time to other processes sharing
the cores. `--only NAMES` (comma-separated) measures only those rows, e.g.
`--only train,train_off` for a quick A/B of the ratio.

Pipelines are read from Python (`for batch in iterator`): a few dozen
batches per epoch, so the Python cost per batch (~0.1 ms) is noise.
`--threads N` sets `tf.data.Options().threading.private_threadpool_size` on
every pipeline.

`main(argv)` returns the rows (see `_row`) for tests.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

GENERATOR_VERSION = 1


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring for details.",
    )
    p.add_argument("--recipe", default="spvit", help="a keras_spvit.training recipe name")
    p.add_argument("--images", type=int, default=512, help="JPEGs to generate")
    p.add_argument("--classes", type=int, default=8, help="class folders to generate")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs per pipeline")
    p.add_argument("--steady-epochs", type=int, default=2,
                   help="epochs read after the first one of each pipeline iterator (steady state)")
    p.add_argument("--threads", type=int, default=None,
                   help="tf.data private thread pool size (default: TF's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source-size", default="500x375",
                   help="generated JPEG size, WIDTHxHEIGHT")
    p.add_argument("--dir", default=None, help="image folder to use or fill")
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--only", default=None,
                   help="comma-separated row names to measure (default: all)")
    args = p.parse_args(argv)
    try:
        args.source_width, args.source_height = (int(v) for v in args.source_size.split("x"))
    except ValueError:
        p.error(f"--source-size must be WIDTHxHEIGHT, got {args.source_size!r}")
    if min(args.images, args.classes, args.batch_size, args.image_size, args.repeats,
           args.source_width, args.source_height, args.steady_epochs) < 1 or args.warmup < 0:
        p.error("sizes, counts, --repeats and --steady-epochs must be >= 1, --warmup >= 0")
    if args.images < args.classes:
        p.error("--images must be >= --classes")
    if args.images < args.batch_size:
        p.error("--images must be >= --batch-size (training drops the partial batch)")
    return args


# === Data ===


def _upsample(array, height, width, tf):
    return tf.image.resize(array[None], (height, width), "bilinear")[0].numpy()


def synthetic_image(rng, height, width):
    """One natural-looking uint8 RGB image `(height, width, 3)`.

    Smooth colour gradient between random corner colours, low-frequency
    blotches, texture at 1/8 and 1/2 resolution, a few ellipses and
    rectangles, and pixel noise: at quality 90 a 500 x 375 image encodes to
    about 100 KB, as an average ImageNet JPEG.
    """
    import tensorflow as tf

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / height, xx / width
    corners = rng.uniform(0, 255, (4, 3)).astype(np.float32)
    weights = np.stack([(1 - yy) * (1 - xx), (1 - yy) * xx, yy * (1 - xx), yy * xx], -1)
    image = weights @ corners
    image += _upsample(rng.normal(0, 40, (6, 8, 3)).astype(np.float32), height, width, tf)
    for scale, sigma in ((8, 25.0), (2, 22.0)):
        coarse = rng.normal(0, sigma, (max(height // scale, 1), max(width // scale, 1), 3))
        image += _upsample(coarse.astype(np.float32), height, width, tf)
    for _ in range(int(rng.integers(3, 8))):
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        cy, cx = rng.uniform(0, 1, 2)
        ry, rx = rng.uniform(0.05, 0.3, 2)
        if rng.random() < 0.5:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        else:
            inside = (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
        image[inside] = 0.3 * image[inside] + 0.7 * colour
    image += rng.normal(0, 12.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _has_images(root):
    from keras_spvit.data.datasets import IMAGE_EXTENSIONS

    if not os.path.isdir(root):
        return False
    for _, _, names in os.walk(root):
        if any(os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS for n in names):
            return True
    return False


def jpeg_folder(args):
    """The image folder to read: `--dir` as it is, or generated JPEGs (cached).

    Returns `(root, mean_file_kb, generated)`.
    """
    import tensorflow as tf

    spec = {"images": args.images, "classes": args.classes, "width": args.source_width,
            "height": args.source_height, "quality": 90, "version": GENERATOR_VERSION}
    if args.dir is None:
        name = "keras_spvit_jpegs_{images}x{classes}_{width}x{height}_q90_v{version}".format(**spec)
        root = os.path.join(tempfile.gettempdir(), name)
    else:
        root = args.dir
    marker = os.path.join(root, ".generated.json")
    generated = True
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) != spec:
                raise SystemExit(f"{root} holds JPEGs generated with other parameters; "
                                 "pass another --dir.")
    elif args.dir is not None and _has_images(root):
        generated = False  # a real image folder: use it as it is
    else:
        os.makedirs(root, exist_ok=True)
        print(f"generating {args.images} JPEGs ({args.source_width}x{args.source_height}, "
              f"q90) in {root} ...", flush=True)
        for i in range(args.images):
            folder = os.path.join(root, f"class_{i % args.classes:03d}")
            os.makedirs(folder, exist_ok=True)
            rng = np.random.default_rng([args.seed, i])
            image = synthetic_image(rng, args.source_height, args.source_width)
            data = tf.io.encode_jpeg(image, quality=90).numpy()
            with open(os.path.join(folder, f"img_{i:06d}.jpg"), "wb") as f:
                f.write(data)
        with open(marker, "w") as f:
            json.dump(spec, f)
    from keras_spvit.data.datasets import list_image_folder

    paths, _, _ = list_image_folder(root)
    kb = statistics.fmean(os.path.getsize(p) for p in paths) / 1e3
    return root, kb, generated


# === Pipelines ===


def _consume(dataset, tf):
    """Iterates one epoch inside TensorFlow; returns the number of images."""

    def count(element):
        first = element[0] if isinstance(element, tuple) else element
        if first.dtype == tf.string:
            return tf.cast(tf.size(first), tf.int64), tf.cast(tf.strings.length(first), tf.float64)
        # A batch's images are (batch, h, w, c); one image is (h, w, c).
        if first.shape.rank == 4:
            n = tf.shape(first, out_type=tf.int64)[0]
        else:
            n = tf.constant(1, tf.int64)
        # Touching one value keeps every op that produced the element alive.
        return n, tf.cast(tf.reshape(first, [-1])[0], tf.float64)

    def step(state, *element):
        n, touch = count(element if len(element) > 1 else element[0])
        return state[0] + n, state[1] + touch

    images, _ = dataset.reduce((tf.constant(0, tf.int64), tf.constant(0.0, tf.float64)), step)
    return int(images)


def build_pipelines(root, args):
    """`{name: (kind, description, dataset)}` in the order they are reported."""
    import tensorflow as tf

    from keras_spvit.cli.train import train_augment
    from keras_spvit.data import image_folder_dataset, list_image_folder, normalize
    from keras_spvit.training.recipes import get_recipe

    recipe = get_recipe(args.recipe)
    size, batch, seed = args.image_size, args.batch_size, args.seed
    off = recipe.replace(randaugment=None, random_erasing=0.0)
    options = tf.data.Options()
    if args.threads:
        options.threading.private_threadpool_size = args.threads

    pipelines = {}

    def add(name, kind, description, dataset):
        pipelines[name] = (kind, description, dataset.with_options(options))

    def folder(training, augment=None):
        return image_folder_dataset(root, image_size=size, batch_size=batch, training=training,
                                    augment=augment, seed=seed)

    add("train", "pipeline", f"image_folder_dataset, recipe {recipe.name}",
        folder(True, train_augment(recipe, seed)))
    batched = train_augment(recipe, seed)
    batched.batch_rand_augment = True
    add("train_batched", "pipeline", "same, RandAugment/normalise/erasing per batch",
        folder(True, batched))
    idle = recipe.replace(
        randaugment=f"{recipe.randaugment}-p0" if recipe.randaugment else None,
        random_erasing=1e-9 if recipe.random_erasing else 0.0,
    )
    add("train_idle", "pipeline", "same, RandAugment p0, erasing 1e-9 (draws, no operation)",
        folder(True, train_augment(idle, seed)))
    add("train_off", "pipeline", "same, randaugment=None, random_erasing=0",
        folder(True, train_augment(off, seed)))
    add("eval", "pipeline", "image_folder_dataset(training=False)", folder(False))

    # Stages: cumulative, no shuffle, a seed per image from its index.
    paths, _, _ = list_image_folder(root)
    autotune = tf.data.AUTOTUNE
    indexed = tf.data.Dataset.from_tensor_slices((paths, tf.range(len(paths), dtype=tf.int64)))

    def read(path, index):
        return tf.io.read_file(path), index

    def decode(data, index):
        # As keras_spvit.data.pipelines reads image folders.
        return tf.io.decode_image(data, channels=3, expand_animations=False), index

    def augmented(augment):
        def apply(image, index):
            example_seed = tf.stack([tf.constant(seed, tf.int64), index])
            return augment(image, size, example_seed), index

        return apply

    read_ds = indexed.map(read, num_parallel_calls=autotune)
    decoded = read_ds.map(decode, num_parallel_calls=autotune)
    add("read file", "stage", "tf.io.read_file", read_ds)
    add("decode JPEG", "stage", "tf.io.decode_image(channels=3)", decoded)
    steps = [
        ("crop+resize", "random_resized_crop",
         off.replace(horizontal_flip=False, mixup_alpha=0.0, cutmix_alpha=0.0)),
        ("flip", "horizontal flip", off.replace(mixup_alpha=0.0, cutmix_alpha=0.0)),
        ("RandAugment", f"randaugment={recipe.randaugment}",
         recipe.replace(random_erasing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0)),
        ("erasing", f"random_erasing={recipe.random_erasing}",
         recipe.replace(mixup_alpha=0.0, cutmix_alpha=0.0)),
    ]
    enabled = {
        "crop+resize": True,
        "flip": recipe.horizontal_flip,
        "RandAugment": bool(recipe.randaugment),
        "erasing": bool(recipe.random_erasing),
    }
    augmented_ds = None
    for name, description, stage_recipe in steps:
        if enabled[name]:
            augmented_ds = decoded.map(augmented(train_augment(stage_recipe, seed)),
                                       num_parallel_calls=autotune)
            add(name, "stage", f"TrainAugment: + {description}", augmented_ds)

    def normalise(image, index):
        return normalize(image), index

    # Later stages extend the last augmentation (no second trace of it).
    normalised = augmented_ds.map(normalise, num_parallel_calls=autotune)
    add("normalise", "stage", "normalize (ImageNet mean/std)", normalised)
    batched = normalised.batch(batch, drop_remainder=True)
    add("batch", "stage", f"batch({batch}) + prefetch", batched.prefetch(autotune))
    mixer = train_augment(recipe, seed)
    if mixer.mixes:
        num_classes = len(list_image_folder(root)[2])

        def mix(images, index):
            batch_seed = tf.stack([tf.constant(seed, tf.int64), index[0]])
            return mixer.mix_batch(images, index % num_classes, num_classes, batch_seed)

        mixed = batched.map(mix)
        add("mix", "stage", "MixUp / CutMix per batch", mixed.prefetch(autotune))
    return pipelines


# === Measurement ===


def _row(name, kind, description, images, times, cpu_times):
    ips = [images / t for t in times]
    median = statistics.median(ips)
    return {
        "name": name, "kind": kind, "description": description, "images": images,
        "images_per_s": median, "min": min(ips), "max": max(ips),
        "ms_per_image": 1000.0 / median, "stage_ms": None, "ratio": None,
        "cpu_ms": 1000.0 * statistics.median(cpu_times) / images, "cpu_ratio": None,
        "times_s": list(times), "cpu_times_s": list(cpu_times),
        "startup_s": None, "steady_images_per_s": None, "steady_cpu_ms": None,
        "steady_ratio": None, "steady_cpu_ratio": None,
    }


def _images_in(element):
    first = element[0] if isinstance(element, tuple) else element
    return int(first.shape[0]) if first.shape.rank == 4 else 1


def _count_elements(dataset, tf):
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, *_: n + 1))


def _read_epochs(dataset, elements_per_epoch, epochs):
    """Reads `epochs` epochs through one fresh iterator.

    Returns `(startup_s, [(wall_s, cpu_s, images) per epoch])`: `startup_s`
    from creating the iterator to its first element; epoch 1 counts from the
    iterator's creation (start-up included).
    """
    epochs_done = []
    images = count = 0
    first = None
    cpu, start = time.process_time(), time.perf_counter()
    last_cpu, last = cpu, start
    for element in iter(dataset.repeat(epochs)):
        if first is None:
            first = time.perf_counter() - start
        images += _images_in(element)
        count += 1
        if count % elements_per_epoch == 0:
            now, now_cpu = time.perf_counter(), time.process_time()
            epochs_done.append((now - last, now_cpu - last_cpu, images))
            last, last_cpu, images = now, now_cpu, 0
    return first, epochs_done


def measure(pipelines, repeats, warmup, tf, steady_epochs=2):
    counts, elements = {}, {}
    for name, (kind, _, dataset) in pipelines.items():
        for _ in range(warmup):
            counts[name] = _consume(dataset, tf)
        if kind == "pipeline":
            elements[name] = _count_elements(dataset, tf)
    times = {name: [] for name in pipelines}
    cpu_times = {name: [] for name in pipelines}
    startup = {name: [] for name in elements}
    steady = {name: [] for name in elements}  # (wall_s, cpu_s, images) of the later epochs
    for repeat in range(repeats):
        for name, (kind, _, dataset) in pipelines.items():
            if kind == "pipeline":
                first, epochs = _read_epochs(dataset, elements[name], 1 + steady_epochs)
                wall, cpu, counts[name] = epochs[0]
                times[name].append(wall)
                cpu_times[name].append(cpu)
                startup[name].append(first)
                steady[name].append(tuple(sum(e[i] for e in epochs[1:]) for i in range(3)))
                continue
            cpu, start = time.process_time(), time.perf_counter()
            counts[name] = _consume(dataset, tf)
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu)
        print(f"  repeat {repeat + 1}/{repeats} done", flush=True)
    rows = [_row(name, kind, description, counts[name], times[name], cpu_times[name])
            for name, (kind, description, _) in pipelines.items()]
    by_name = {r["name"]: r for r in rows}
    for name in elements:
        r = by_name[name]
        r["startup_s"] = statistics.median(startup[name])
        r["steady_images_per_s"] = statistics.median(n / w for w, _, n in steady[name])
        r["steady_cpu_ms"] = statistics.median(1000.0 * c / n for _, c, n in steady[name])
        r["steady_times_s"] = [w for w, _, _ in steady[name]]
    if "train_off" in by_name:
        off = by_name["train_off"]
        for name in ("train", "train_batched", "train_idle", "train_off"):
            if name in by_name:
                r = by_name[name]
                r["ratio"] = r["images_per_s"] / off["images_per_s"]
                # CPU time per image, inverted so that it reads like the ratio.
                r["cpu_ratio"] = off["cpu_ms"] / r["cpu_ms"]
                r["steady_ratio"] = r["steady_images_per_s"] / off["steady_images_per_s"]
                r["steady_cpu_ratio"] = off["steady_cpu_ms"] / r["steady_cpu_ms"]
    previous = 0.0
    for r in rows:
        if r["kind"] == "stage":
            r["stage_ms"] = r["ms_per_image"] - previous
            previous = r["ms_per_image"]
    return rows


def _cell(value, width, digits=2):
    return f"{value:{width}.{digits}f}" if value is not None else " " * width


def print_table(rows):
    print(f"{'':15s}{'images/s':>10s}{'min':>9s}{'max':>9s}{'ms/image':>10s}"
          f"{'stage ms':>10s}  {'ratio':>6s}{'cpu ms':>8s}{'cpu r.':>7s}"
          f"{'start s':>8s}{'steady/s':>9s}{'st. r.':>7s}{'st.cpu':>7s}{'st.cpu r.':>10s}"
          f"  description")
    kind = None
    for r in rows:
        if r["kind"] != kind:
            kind = r["kind"]
            print("pipelines (per epoch, start-up, steady state):" if kind == "pipeline"
                  else "stages (cumulative):")
        print(f"  {r['name']:13s}{r['images_per_s']:10.1f}{r['min']:9.1f}{r['max']:9.1f}"
              f"{r['ms_per_image']:10.2f}{_cell(r['stage_ms'], 10)}  {_cell(r['ratio'], 6)}"
              f"{r['cpu_ms']:8.2f}{_cell(r['cpu_ratio'], 7)}{_cell(r['startup_s'], 8)}"
              f"{_cell(r['steady_images_per_s'], 9, 1)}{_cell(r['steady_ratio'], 7)}"
              f"{_cell(r['steady_cpu_ms'], 7)}{_cell(r['steady_cpu_ratio'], 10)}  "
              f"{r['description']}")


def main(argv=None):
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    root, kb, generated = jpeg_folder(args)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"recipe={args.recipe} images={root} ({'generated' if generated else 'as found'}, "
          f"mean {kb:.0f} KB) batch={args.batch_size} image={args.image_size}px "
          f"repeats={args.repeats} warmup={args.warmup} threads={args.threads or 'default'} "
          f"(cpus={cpus}) tf={tf.__version__} keras={keras.__version__} "
          f"backend={keras.backend.backend()}", flush=True)
    pipelines = build_pipelines(root, args)
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - set(pipelines))
        if unknown:
            raise SystemExit(f"--only: unknown rows {unknown}; rows are {list(pipelines)}")
        pipelines = {name: value for name, value in pipelines.items() if name in names}
    rows = measure(pipelines, args.repeats, args.warmup, tf, args.steady_epochs)
    print_table(rows)
    by_name = {r["name"]: r for r in rows}
    for name in ("train", "train_batched", "train_idle"):
        if name in by_name and by_name[name]["ratio"] is not None:
            r = by_name[name]
            print(f"{name} / train_off, steady state (the #10 target): "
                  f"{r['steady_ratio']:.2f} images/s, {r['steady_cpu_ratio']:.2f} by CPU time "
                  f"per image; per epoch of {r['images']} images (start-up included): "
                  f"{r['ratio']:.2f} images/s, {r['cpu_ratio']:.2f} by CPU time; start-up "
                  f"{r['startup_s']:.2f} s vs {by_name['train_off']['startup_s']:.2f} s "
                  f"(medians, same run)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "mean_file_kb": kb, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
