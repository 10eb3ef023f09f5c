"""PatchCore's scoring on a torch device (the GPU path), in batches and without leaving the device.

- Search: the bank's distances in half precision as one matrix product per chunk of queries, the
  `candidates` nearest by that estimate rescored in float32, the least kept. The estimate only chooses
  whom to rescore; every returned distance is float32. It equals the exact search whenever the true
  nearest row is among the candidates (checked on real features in `benchmarks/gpu.py` and on small ones
  in `tests/unit/detectors/test_device_scoring.py`).
- Maps: resize-then-blur of each patch-score map as two matrix products (`features.resample`, OpenCV's
  weights); the image score is the map's maximum. Maps leave the device only when asked for.

The same functions run on the CPU in the tests (torch supports half matrix products there, slowly).
"""

from __future__ import annotations

import torch

from cellsight.features.resample import smooth_upsample_matrix

CANDIDATES = 32
"""Bank rows rescored in float32 per query (out of the half-precision estimate's nearest)."""


def nearest_squared_distances_half(
    queries: torch.Tensor, bank: torch.Tensor, candidates: int = CANDIDATES, chunk: int = 8192
) -> torch.Tensor:
    """Squared L2 distance of each query to its nearest bank row: half-precision shortlist, float32 rescore."""
    bank = bank.float()
    bank_half = bank.half()
    bank_sq_half = bank.square().sum(1).half()
    k = min(candidates, bank.shape[0])
    out = []
    for part in queries.float().split(chunk):
        estimate = torch.addmm(bank_sq_half, part.half(), bank_half.T, alpha=-2.0)
        shortlist = estimate.topk(k, dim=1, largest=False).indices
        exact = (bank[shortlist] - part[:, None, :]).square().sum(2)
        out.append(exact.min(dim=1).values)
    return torch.cat(out)


def smoothed_maps(patch_scores: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(N, h, w) patch scores -> (N, size, size) maps: INTER_LINEAR upsampling then the Gaussian blur."""
    _, h, w = patch_scores.shape
    rows = torch.from_numpy(smooth_upsample_matrix(h, size, sigma)).to(patch_scores.device, torch.float32)
    cols = rows if w == h else torch.from_numpy(smooth_upsample_matrix(w, size, sigma)).to(rows)
    return torch.matmul(torch.matmul(rows, patch_scores.float()), cols.T)
