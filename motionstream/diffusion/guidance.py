"""Joint text-motion guidance (paper Eq. 2; the same combination gives the real score of Eq. 4).

    v_hat = v_base + w_t (v(c_t, c_m) - v(0, c_m)) + w_m (v(c_t, c_m) - v(c_t, 0))
    v_base = a v(0, c_m) + (1 - a) v(c_t, 0),   a = w_t / (w_t + w_m)

Equivalently v_hat = v_base + (w_t + w_m) (v_cond - v_base): classifier-free guidance of total
scale w_t + w_m around a mixed unconditional prediction (scale 1 = the conditional prediction, as in
Wan's `uncond + s (cond - uncond)`). Reductions (tested):

    w_m = 0        text CFG of scale w_t:    v(0, c_m) + w_t (v_cond - v(0, c_m))   (2 evaluations)
    w_t = 0        motion CFG of scale w_m:  v(c_t, 0) + w_m (v_cond - v(c_t, 0))   (2 evaluations)
    w_t = w_m = 0  a = 0/0 is undefined; we define it as guidance off, i.e. the conditional
                   prediction v(c_t, c_m)                                          (1 evaluation)

Everything here is linear in its inputs, so it works on velocities, x0 or scores alike (the
distillation reuses it for Eq. 4 on the frozen teacher's outputs).
"""

from __future__ import annotations

from typing import Callable

import torch


def needed_evaluations(text_scale: float, motion_scale: float) -> tuple[bool, bool]:
    """(needs v(0, c_m), needs v(c_t, 0)): which unconditional branches Eq. 2 uses at these weights."""
    if text_scale == 0 and motion_scale == 0:
        return False, False
    return text_scale != 0, motion_scale != 0


def joint_guidance(v_cond: torch.Tensor, v_no_text: torch.Tensor | None, v_no_motion: torch.Tensor | None,
                   text_scale: float = 3.0, motion_scale: float = 1.5) -> torch.Tensor:
    """Eq. 2 / Eq. 4. v_cond = v(c_t, c_m), v_no_text = v(0, c_m), v_no_motion = v(c_t, 0), same shapes.

    A branch whose weight is 0 may be None (it is not used). Weights must be >= 0.
    """
    if text_scale < 0 or motion_scale < 0:
        raise ValueError(f"guidance weights must be >= 0, got w_t={text_scale}, w_m={motion_scale}")
    total = text_scale + motion_scale
    if total == 0:
        return v_cond
    need_text, need_motion = needed_evaluations(text_scale, motion_scale)
    if (need_text and v_no_text is None) or (need_motion and v_no_motion is None):
        raise ValueError(f"w_t={text_scale}, w_m={motion_scale} need v(0, c_m)={need_text} and v(c_t, 0)={need_motion}")
    alpha = text_scale / total
    if not need_motion:
        base = v_no_text
    elif not need_text:
        base = v_no_motion
    else:
        base = alpha * v_no_text + (1 - alpha) * v_no_motion
    return base + total * (v_cond - base)


def guided_prediction(predict: Callable[[bool, bool], torch.Tensor], text_scale: float = 3.0,
                      motion_scale: float = 1.5) -> torch.Tensor:
    """Run only the evaluations Eq. 2 needs and combine them.

    predict(use_text, use_motion) -> the model's prediction with the text / motion condition on
    (True) or replaced by its null (False).
    """
    need_text, need_motion = needed_evaluations(text_scale, motion_scale)
    v_cond = predict(True, True)
    v_no_text = predict(False, True) if need_text else None
    v_no_motion = predict(True, False) if need_motion else None
    return joint_guidance(v_cond, v_no_text, v_no_motion, text_scale, motion_scale)
