"""Display interpolation, 8x8 to 32x32, for the overlay only (never for measuring).

The Pi thermal-camera examples call ``scipy.interpolate.griddata(method="cubic")`` on every
frame: a Delaunay triangulation and a Clough-Tocher fit of 64 points, milliseconds each time.
On a regular grid the same job is separable: bicubic convolution (Keys, a = -0.5) is linear in
the pixels, so one 32x8 matrix M computed once gives ``M @ X @ M.T``: two tiny matrix products.

The kernel interpolates (it passes through every pixel value) and reproduces quadratics; the
edges use Keys' boundary rule f(-1) = 3f(0) - 3f(1) + f(2) rather than clamping, which keeps
the slope at the border. The output grid spans the first to the last pixel centre (the
examples' ``mgrid[0:7:32j]``), so both functions sample the same points.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]
_A = -0.5  # Keys' choice: third-order accurate, interpolating


def _kernel(x: float) -> float:
    x = abs(x)
    if x <= 1.0:
        return (_A + 2.0) * x**3 - (_A + 3.0) * x**2 + 1.0
    if x < 2.0:
        return _A * x**3 - 5.0 * _A * x**2 + 8.0 * _A * x - 4.0 * _A
    return 0.0


@lru_cache(maxsize=8)
def interpolation_matrix(n_in: int = 8, n_out: int = 32) -> Matrix:
    """M of shape (n_out, n_in): row k holds the weights of the input samples at output k,
    which sits at k * (n_in - 1) / (n_out - 1) in input coordinates."""
    if n_in < 3 or n_out < 2:
        raise ValueError("need at least 3 inputs and 2 outputs")
    # Extension: samples -1 and n_in extrapolated from the border (Keys' boundary condition).
    extend = np.zeros((n_in + 2, n_in))
    extend[1:-1] = np.eye(n_in)
    extend[0, :3] = (3.0, -3.0, 1.0)
    extend[-1, -3:] = (1.0, -3.0, 3.0)
    weights = np.zeros((n_out, n_in + 2))
    for k in range(n_out):
        p = k * (n_in - 1) / (n_out - 1)
        i = min(int(np.floor(p)), n_in - 2)
        frac = p - i
        for offset in (-1, 0, 1, 2):
            weights[k, i + offset + 1] = _kernel(frac - offset)
    matrix = weights @ extend
    matrix.setflags(write=False)
    return matrix


def upsample(pixels: npt.ArrayLike, size: int = 32) -> Matrix:
    """Bicubic 8x8 -> size x size, microseconds per frame."""
    x = np.asarray(pixels, dtype=np.float64)
    rows = interpolation_matrix(x.shape[0], size)
    cols = rows if x.shape[1] == x.shape[0] else interpolation_matrix(x.shape[1], size)
    return rows @ x @ cols.T


def upsample_griddata(pixels: npt.ArrayLike, size: int = 32) -> Matrix:
    """The reference the Pi thermal-camera examples use, for benchmarks and comparison."""
    from scipy.interpolate import griddata  # only the benchmark pays for the import

    x = np.asarray(pixels, dtype=np.float64)
    n_rows, n_cols = x.shape
    points = np.array([(r, c) for r in range(n_rows) for c in range(n_cols)], dtype=np.float64)
    grid_r, grid_c = np.mgrid[0 : n_rows - 1 : complex(size), 0 : n_cols - 1 : complex(size)]
    out: Matrix = griddata(points, x.ravel(), (grid_r, grid_c), method="cubic")
    return out
