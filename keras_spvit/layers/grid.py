"""Token-grid geometry shared by the layers that see tokens as a 2D grid."""

import math

import numpy as np


def resolve_grid(num_tokens, grid_shape, layer_name):
    """Returns the `(rows, cols)` grid of `num_tokens` patch tokens.

    With `grid_shape=None` the grid must be square; a non-square grid has to
    be named, because `num_tokens` alone cannot tell 8 x 2 from 4 x 4.
    """
    if num_tokens is None:
        if grid_shape is None:
            raise ValueError(
                f"{layer_name} needs a known number of tokens or an explicit "
                "`grid_shape=(rows, cols)`. Received an input with an unknown "
                "token axis and grid_shape=None."
            )
        return tuple(grid_shape)
    if grid_shape is None:
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(
                f"{layer_name} received {num_tokens} patch tokens, which do not "
                "form a square grid. Pass `grid_shape=(rows, cols)` for a "
                "non-square grid, and check that no class token is included."
            )
        return (side, side)
    rows, cols = grid_shape
    if rows * cols != num_tokens:
        raise ValueError(
            f"{layer_name} expected {rows} x {cols} = {rows * cols} patch tokens "
            f"for grid_shape={tuple(grid_shape)}. Received {num_tokens} tokens."
        )
    return tuple(grid_shape)


def relative_offsets(grid_shape):
    """Distinct 2D offsets of a grid and, per token pair, which one applies.

    Token p sits at row `p // cols`, column `p % cols` (row-major, the order
    of a channels-last reshape). For query i and key j the offset is
    `(dx, dy) = (col_j - col_i, row_j - row_i)`.

    Returns:
        offsets: float32 `((2 rows - 1) (2 cols - 1), 2)` table of `[dx, dy]`.
        index: int32 `(N, N)` with `offsets[index[i, j]]` the offset of (i, j).
    """
    rows, cols = grid_shape
    dy, dx = np.meshgrid(
        np.arange(-(rows - 1), rows), np.arange(-(cols - 1), cols), indexing="ij"
    )
    offsets = np.stack([dx.ravel(), dy.ravel()], axis=-1).astype("float32")
    row = np.arange(rows * cols) // cols
    col = np.arange(rows * cols) % cols
    rel_row = row[None, :] - row[:, None] + rows - 1
    rel_col = col[None, :] - col[:, None] + cols - 1
    index = (rel_row * (2 * cols - 1) + rel_col).astype("int32")
    return offsets, index
