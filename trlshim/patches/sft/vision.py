"""Step (TRL < 0.22): packing or padding-free with a vision-language model, a processor or image data
is an error. Rows would be packed by their text alone, so image placeholder tokens and the image
features the model receives fall out of step - it trains on the wrong pairing, silently. TRL 0.22+
refuses packing and padding-free for vision datasets itself (and trlshim's automatic padding-free
never turns on for them: ``packing.auto_padding_free_decision``).
"""
from __future__ import annotations

from ...translate import installed_label
from .data import vision_reason


def refuse_packing(call) -> None:
    asked = [n for n in ("packing", "padding_free") if call.get(n)]
    if not asked:
        return
    why = vision_reason(call)
    if why:
        raise ValueError(
            f"{' and '.join(f'{n}=True' for n in asked)} with vision data: {why}. Packed or flattened rows are cut "
            "by their text alone, so image tokens and image features would no longer line up; use packing=False and "
            f"padding_free=False ({installed_label()}; TRL >= 0.22 refuses this too)"
        )
