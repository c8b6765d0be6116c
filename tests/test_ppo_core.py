"""PPO maths checked against hand-computed numbers."""

import math

import pytest
import torch

from rlhf_gym.ppo import core
from rlhf_gym.rloo import rloo_advantages


def test_kl_estimators_by_hand():
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.4)]])
    k1 = core.kl_estimate(logp, ref, "k1")
    assert torch.allclose(k1, torch.tensor([[math.log(2.0), math.log(0.5)]]))
    # k3 = (r - 1) - log r with r = p_ref / p: r = 0.5 -> -0.5 + log 2; r = 2 -> 1 - log 2
    k3 = core.kl_estimate(logp, ref, "k3")
    assert torch.allclose(k3, torch.tensor([[-0.5 + math.log(2.0), 1.0 - math.log(2.0)]]), atol=1e-6)
    assert (k3 >= 0).all()
    assert torch.equal(core.kl_estimate(ref, ref, "k1"), torch.zeros_like(ref))
    assert torch.equal(core.kl_estimate(ref, ref, "k3"), torch.zeros_like(ref))
    with pytest.raises(ValueError, match="k2"):
        core.kl_estimate(logp, ref, "k2")


def test_per_token_rewards_put_score_on_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    r = core.per_token_rewards(torch.tensor([1.0, 2.0]), kl, mask, kl_coef=0.5)
    expected = torch.tensor([[-0.05, -0.1, -0.15 + 1.0], [-0.2, -0.25 + 2.0, 0.0]])
    assert torch.allclose(r, expected)


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 9.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    gamma, lam = 1.0, 0.5
    adv, ret = core.gae(rewards, values, mask, gamma, lam)
    # row 0: d2 = 1 - 0.3 = 0.7; d1 = 0 + 0.3 - 0.2 = 0.1; d0 = 0 + 0.2 - 0.1 = 0.1
    # A2 = 0.7, A1 = 0.1 + 0.5*0.7 = 0.45, A0 = 0.1 + 0.5*0.45 = 0.325
    # row 1 (ends at t=1; the masked value 7 must not leak in): d1 = 2 - 1 = 1; d0 = 0.5 + 1 - 1 = 0.5
    # A1 = 1, A0 = 0.5 + 0.5 * 1 = 1.0
    assert torch.allclose(adv, torch.tensor([[0.325, 0.45, 0.7], [1.0, 1.0, 0.0]]))
    assert torch.allclose(ret, adv + values * mask)


def test_policy_loss_clips_and_reports():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    loss, stats = core.policy_loss(new, old, adv, mask, cliprange=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(0.5, 0.8) = 0.8 (clipped)
    assert torch.isclose(loss, torch.tensor(-0.2))
    assert stats["clipfrac"] == 1.0
    loss_same, stats_same = core.policy_loss(old, old, adv, mask, cliprange=0.2)
    assert stats_same["clipfrac"] == 0 and stats_same["approxkl"] == 0


def test_value_loss_clipping():
    old = torch.tensor([[0.0]])
    ret = torch.tensor([[1.0]])
    loss, stats = core.value_loss(torch.tensor([[0.9]]), old, ret, torch.ones(1, 1), cliprange_value=0.2)
    # clipped prediction 0.2 -> error 0.64 > 0.01 -> 0.5 * 0.64
    assert torch.isclose(loss, torch.tensor(0.32)) and stats["vf_clipfrac"] == 1.0


def test_whiten_and_explained_variance():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = core.masked_whiten(x, mask)
    assert abs(float(core.masked_mean(w, mask))) < 1e-6 and w[0, 3] == 0
    assert core.explained_variance(x, x, mask) == pytest.approx(1.0)


def test_adaptive_kl_controller():
    ctl = core.AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(12.0, n_steps=10)  # error clipped to +0.2 -> beta *= 1 + 0.2 * 0.1
    assert ctl.value == pytest.approx(0.102)
    ctl.update(0.0, n_steps=10)  # error -1 clipped to -0.2
    assert ctl.value == pytest.approx(0.102 * 0.98)
    fixed = core.FixedKLController(0.05)
    fixed.update(100.0, 10)
    assert fixed.value == 0.05


def test_rloo_advantages_by_hand():
    r = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    adv = rloo_advantages(r, k=3)
    # 1 - (2+3)/2 = -1.5; 2 - 2 = 0; 3 - 1.5 = 1.5; equal rewards -> 0
    assert torch.allclose(adv, torch.tensor([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError):
        rloo_advantages(torch.ones(5), k=3)
