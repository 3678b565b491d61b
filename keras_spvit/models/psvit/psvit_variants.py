"""PSViT variants as data. No official configurations exist (the paper's code
is not public): these are reconstructions sized to DeiT-Tiny / DeiT-Small
cost, with DeiT-shaped plain ViTs from the same builder as baselines.
MACs per 224 px image, from `keras_spvit.analysis.flops.count_macs`, are in
`info` and asserted by the tests."""



def every_second_layer(stage_depths):
    """Layers 1, 3, ... of each stage: share every second map, never across a pooling."""
    shared, start = [], 0
    for depth in stage_depths:
        shared += list(range(start + 1, start + depth, 2))
        start += depth
    return shared


PSVIT_VARIANTS = {
    "psvit_2d_tiny": dict(
        arch=dict(stage_depths=(8, 6, 4), stage_dims=(192, 320, 448), stage_heads=(3, 5, 7),
                  pooling_mode="2d", shared_layers=every_second_layer((8, 6, 4)),
                  drop_path_rate=0.1),
        info=dict(top1=None, gmacs=1.259),
    ),
    "psvit_1d_tiny": dict(
        arch=dict(stage_depths=(6, 6, 4), stage_dims=(192, 256, 320), stage_heads=(3, 4, 5),
                  pooling_mode="1d", shared_layers=every_second_layer((6, 6, 4)),
                  drop_path_rate=0.1),
        info=dict(top1=None, gmacs=1.265),
    ),
    "psvit_2d_small": dict(
        arch=dict(stage_depths=(8, 6, 4), stage_dims=(384, 576, 768), stage_heads=(6, 9, 12),
                  pooling_mode="2d", shared_layers=every_second_layer((8, 6, 4)),
                  drop_path_rate=0.1),
        info=dict(top1=None, gmacs=4.362),
    ),
    # Baselines: DeiT-Tiny / DeiT-Small shapes (one stage, no pooling, no sharing).
    "plain_vit_tiny": dict(
        arch=dict(stage_depths=(12,), stage_dims=(192,), stage_heads=(3,)),
        info=dict(top1=72.2, gmacs=1.253),
    ),
    "plain_vit_small": dict(
        arch=dict(stage_depths=(12,), stage_dims=(384,), stage_heads=(6,)),
        info=dict(top1=79.8, gmacs=4.598),
    ),
    # CPU-sized, for 32 px images.
    "psvit_tiny_cpu": dict(
        arch=dict(stage_depths=(2, 2), stage_dims=(64, 128), stage_heads=(2, 4),
                  shared_layers=[1, 3], patch_size=4, image_shape=(32, 32, 3)),
        info=dict(top1=None, gmacs=None),
    ),
}
