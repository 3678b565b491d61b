"""The Refined-ViT family's variants as data (released factories of
zhoudaquan/Refiner_ViT @ b3e8cb0c; see `shared/spec/REFINER.md`)."""

REFINED_VIT_VARIANTS = {
    "refined_vit_s": dict(
        arch=dict(embed_dim=384, depth=16, num_heads=12, mlp_ratio=3.0, drop_path_rate=0.1),
        info=dict(top1=(83.6, 84.6), crop_pct=0.9),
    ),
    "refined_vit_m": dict(
        arch=dict(embed_dim=420, depth=32, num_heads=12, mlp_ratio=3.0, drop_path_rate=0.2),
        info=dict(top1=(84.6, 85.6), crop_pct=1.0),
    ),
    "refined_vit_l": dict(
        arch=dict(embed_dim=512, depth=32, num_heads=16, mlp_ratio=3.0, drop_path_rate=0.25),
        info=dict(top1=(84.9, 85.8), crop_pct=1.13),
    ),
    # CPU-sized, for 32 px images; not in the paper.
    "refined_vit_tiny": dict(
        arch=dict(
            embed_dim=64, depth=4, num_heads=4, mlp_ratio=3.0, stem="patch", patch_size=4,
            image_shape=(32, 32, 3),
        ),
        info=dict(top1=None),
    ),
}
