import pytest
import torch

from motionstream.diffusion.guidance import guided_prediction, joint_guidance, needed_evaluations


@pytest.fixture
def preds():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 4, 3, 5, 5, generator=g) for _ in range(3)]


def test_eq2_literal(preds):
    vc, vnt, vnm = preds
    wt, wm = 3.0, 1.5
    a = wt / (wt + wm)
    base = a * vnt + (1 - a) * vnm
    expect = base + wt * (vc - vnt) + wm * (vc - vnm)
    assert torch.allclose(joint_guidance(vc, vnt, vnm, wt, wm), expect, atol=1e-5)


def test_reduces_to_text_cfg_when_motion_weight_zero(preds):
    vc, vnt, vnm = preds
    out = joint_guidance(vc, vnt, vnm, 3.0, 0.0)
    assert torch.allclose(out, vnt + 3.0 * (vc - vnt), atol=1e-6)
    assert torch.equal(joint_guidance(vc, vnt, None, 3.0, 0.0), out)  # v(c_t, 0) not needed


def test_reduces_to_motion_cfg_when_text_weight_zero(preds):
    vc, vnt, vnm = preds
    out = joint_guidance(vc, vnt, vnm, 0.0, 1.5)
    assert torch.allclose(out, vnm + 1.5 * (vc - vnm), atol=1e-6)
    assert torch.equal(joint_guidance(vc, None, vnm, 0.0, 1.5), out)


def test_zero_weights_give_the_conditional_prediction(preds):
    vc, vnt, vnm = preds
    assert torch.equal(joint_guidance(vc, vnt, vnm, 0.0, 0.0), vc)
    assert torch.allclose(joint_guidance(vc, vnt, vnm, 1.0, 0.0), vc, atol=1e-6)  # CFG scale 1


def test_guided_prediction_counts_evaluations(preds):
    vc, vnt, vnm = preds
    table = {(True, True): vc, (False, True): vnt, (True, False): vnm}
    for (wt, wm), n in {(3.0, 1.5): 3, (3.0, 0.0): 2, (0.0, 1.5): 2, (0.0, 0.0): 1}.items():
        calls = []
        out = guided_prediction(lambda t, m: calls.append((t, m)) or table[(t, m)], wt, wm)
        assert len(calls) == n
        assert torch.allclose(out, joint_guidance(vc, vnt, vnm, wt, wm))
    assert needed_evaluations(3.0, 1.5) == (True, True)


def test_bad_input(preds):
    vc, vnt, vnm = preds
    with pytest.raises(ValueError, match=">= 0"):
        joint_guidance(vc, vnt, vnm, -1.0, 1.0)
    with pytest.raises(ValueError, match="need"):
        joint_guidance(vc, None, vnm, 3.0, 1.5)
