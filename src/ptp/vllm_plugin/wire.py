"""What the proposer (in vLLM's environment) and the draft worker (in ptp's) send each other besides JSON
numbers: the teacher's hidden states, as base64 of little-endian float32 (compact, exact)."""

from __future__ import annotations

import base64

import torch

Features = tuple[int, torch.Tensor]  # (position of the first row, [q, H] teacher features)


def encode_features(start: int, rows: torch.Tensor) -> dict:
    """{"start", "rows", "data"}: ``rows`` [q, H] as the request carries them."""
    data = rows.detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4").tobytes()
    return {"start": int(start), "rows": int(rows.shape[0]), "data": base64.b64encode(data).decode()}


def decode_features(item: dict | None) -> Features | None:
    """Inverse of ``encode_features``; None for none or no rows."""
    if not item or not item["rows"]:
        return None
    flat = torch.frombuffer(bytearray(base64.b64decode(item["data"])), dtype=torch.float32)
    return int(item["start"]), flat.view(int(item["rows"]), -1)
