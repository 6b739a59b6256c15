"""KD methods, loss, frame geometry and batch plans (fast, no files)."""

import numpy as np
import pytest
import torch

from deepwide.distill import data
from deepwide.distill.methods import KDHeads, kd_loss, kd_total, l2l_pairs, method_pairs, pred_layers
from deepwide.errors import DeepwideError
from deepwide.models.arch import HUBERT_CONV, ArchConfig, build_model, conv_layers


def test_pred_layers_distilhubert_and_other_depths():
    assert pred_layers(12) == [4, 8, 12]
    assert pred_layers(4) == [1, 3, 4]
    assert pred_layers(6, 2) == [3, 6]
    assert pred_layers(12, layers=[2, 7]) == [2, 7]
    with pytest.raises(DeepwideError, match="teacher has layers 0..4"):
        pred_layers(4, layers=[5])


def test_l2l_mapping_round_kT_over_L():
    assert l2l_pairs(2, 12) == [(1, 6), (2, 12)]
    assert l2l_pairs(3, 12) == [(1, 4), (2, 8), (3, 12)]
    assert [t for _, t in l2l_pairs(12, 12)] == list(range(1, 13))
    assert [t for _, t in l2l_pairs(8, 12)] == [2, 3, 5, 6, 8, 9, 11, 12]  # 1.5 -> 2 (half up)
    assert [t for _, t in l2l_pairs(24, 12)][:4] == [1, 1, 2, 2]
    # sparse subset and explicit pairs
    assert l2l_pairs(12, 12, student_layers=[4, 8, 12]) == [(4, 4), (8, 8), (12, 12)]
    assert l2l_pairs(4, 12, pairs=[[2, 5], [4, 12]]) == [(2, 5), (4, 12)]
    with pytest.raises(DeepwideError, match="student layer 5 out of range"):
        l2l_pairs(4, 12, student_layers=[5])


def test_heads_shapes_and_targets():
    pairs = method_pairs("pred", 2, 12, {"layers": None, "num_targets": 3})
    assert pairs == [(2, 4), (2, 8), (2, 12)]
    h = KDHeads("pred", pairs, 32, 48)
    states = [torch.randn(2, 7, 32) for _ in range(3)]
    out = h(states)
    assert [o.shape for o in out] == [(2, 7, 48)] * 3
    assert isinstance(h.heads[0][1], torch.nn.GELU)
    h2 = KDHeads("l2l", l2l_pairs(2, 12), 32, 48)
    assert all(isinstance(m, torch.nn.Linear) for m in h2.heads)
    # l2l head k reads student layer k
    out = h2(states)
    assert torch.allclose(out[0], h2.heads[0](states[1]))


def test_loss_ignores_padded_frames():
    torch.manual_seed(0)
    pred, tgt = torch.randn(2, 10, 8), torch.randn(2, 10, 8)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    loss, l1, cos = kd_loss(pred, tgt, mask)
    pred2 = pred.clone()
    pred2[1, 6:] = 1e3  # garbage in the padding changes nothing
    assert torch.allclose(kd_loss(pred2, tgt, mask)[0], loss)
    # value: mean over the 16 valid frames
    valid = mask.reshape(-1)
    p, t = pred.reshape(-1, 8)[valid], tgt.reshape(-1, 8)[valid]
    ref_l1 = (p - t).abs().mean()
    ref_cos = -torch.nn.functional.logsigmoid(torch.nn.functional.cosine_similarity(p, t, dim=-1)).mean()
    assert torch.allclose(l1, ref_l1) and torch.allclose(cos, ref_cos)
    assert torch.allclose(kd_loss(pred, tgt, mask, cos_weight=0.5)[0], ref_l1 + 0.5 * ref_cos)


def test_loss_is_the_mean_over_targets():
    """Three targets or twelve, the objective has the scale of one target's loss."""
    torch.manual_seed(0)
    mask = torch.ones(2, 10, dtype=torch.bool)
    losses = [kd_loss(torch.randn(2, 10, 8), torch.randn(2, 10, 8), mask)[0] for _ in range(3)]
    total = kd_total(losses)
    assert torch.allclose(total, (losses[0] + losses[1] + losses[2]) / 3)
    assert torch.allclose(kd_total(losses * 4), total)  # 12 copies of the same targets: same objective
    # gradients: each target weighs 1/n
    p = torch.zeros(3, requires_grad=True)
    kd_total([p[0] * 1.0, p[1] * 1.0, p[2] * 1.0]).backward()
    assert torch.allclose(p.grad, torch.full((3,), 1 / 3))
    with pytest.raises(DeepwideError, match="no targets"):
        kd_total([])


def test_frame_geometry_hubert():
    assert data.receptive_field(HUBERT_CONV) == 400 and data.hop(HUBERT_CONV) == 320
    for f in (1, 2, 49, 50, 777):
        n = data.samples_for_frames(f, HUBERT_CONV)
        assert data.num_frames(n, HUBERT_CONV) == f
        assert data.num_frames(n - 1, HUBERT_CONV) == f - 1
    assert data.num_frames(16000, HUBERT_CONV) == 49


def test_crop_frames_equal_full_utterance_frames():
    """A frame-aligned crop gives exactly the full utterance's frames (layer_norm front end)."""
    torch.manual_seed(0)
    arch = ArchConfig(depth=1, width=16, ffn=32, heads=2, conv=conv_layers(8), extractor_mode="layer_norm",
                      pos_conv_kernel=4, pos_conv_groups=2)
    fe = build_model(arch).feature_extractor.eval()
    wav = torch.randn(1, 16000)
    full, _ = fe(wav, None)
    f0, F = 7, 20
    s0 = f0 * data.hop(arch.conv)
    crop, _ = fe(wav[:, s0 : s0 + data.samples_for_frames(F, arch.conv)], None)
    assert crop.shape[1] == F
    assert torch.allclose(crop[0], full[0, f0 : f0 + F], atol=1e-5)


def test_bf16_roundtrip():
    x = np.random.default_rng(0).standard_normal((5, 3, 7)).astype(np.float32) * 100
    bits = data.float32_to_bf16(x)
    assert bits.dtype == np.uint16
    back = data.bf16_to_float32(bits)
    assert np.allclose(back, torch.from_numpy(x).bfloat16().float().numpy())
    assert np.allclose(data.stored_to_tensor(bits, "bf16").float().numpy(), back)
    assert np.abs(back - x).max() <= np.abs(x).max() * 2**-8


def test_epoch_plan_buckets_by_seconds_and_is_deterministic():
    rng = np.random.default_rng(1)
    frames = list(rng.integers(20, 400, size=200))
    plan = data.epoch_plan(frames, max_frames=250, batch_frames=1000, seed=3, epoch=0)
    assert plan == data.epoch_plan(frames, max_frames=250, batch_frames=1000, seed=3, epoch=0)
    assert plan != data.epoch_plan(frames, max_frames=250, batch_frames=1000, seed=3, epoch=1)
    seen = sorted(it.index for b in plan for it in b)
    assert seen == list(range(200))  # every utterance once per epoch
    for b in plan:
        longest = max(it.frames for it in b)
        assert len(b) * longest <= 1000 or len(b) == 1
        for it in b:
            assert it.frames == min(frames[it.index], 250)
            assert 0 <= it.start <= frames[it.index] - it.frames
    # bucketing: batches hold similar lengths (much less padding than random batches)
    pad = sum(len(b) * max(it.frames for it in b) - sum(it.frames for it in b) for b in plan)
    assert pad < 0.1 * sum(min(f, 250) for f in frames)


def test_step_plan_spans_epochs_with_a_constant_batch_count():
    frames = list(np.random.default_rng(2).integers(20, 400, size=50))
    sp = data.StepPlan(frames, 250, 1000, seed=1)
    for e in range(4):
        assert len(data.epoch_plan(frames, 250, 1000, 1, e)) == sp.per_epoch
    assert sp[sp.per_epoch + 3] == data.epoch_plan(frames, 250, 1000, 1, 1)[3]
    assert sp.position(2 * sp.per_epoch + 1) == (2, 1)


def _reference_distilhubert_sources(student_sd, depth, teacher_depth):
    """Hand-built reference of s3prl's distiller init (init_teacher_conv_layers and
    init_teacher_encoder_layers): student tensor name -> teacher tensor name, for the CNN,
    the post-extract projection, pos_conv and encoder.layers[l] for l < L."""
    out = {}
    for k in student_sd:
        if k.startswith(("feature_extractor.", "encoder.feature_projection.", "encoder.transformer.pos_conv_embed.")):
            out[k] = k
        elif k.startswith("encoder.transformer.layers."):
            if int(k.split(".")[3]) < min(depth, teacher_depth):
                out[k] = k
    return out


def test_distilhubert_init_copies_pos_conv_and_first_layers():
    from deepwide.distill.trainer import init_encoder_from_teacher, init_from_teacher

    tiny = dict(conv=conv_layers(8), pos_conv_kernel=4, pos_conv_groups=2)
    tarch = ArchConfig(depth=3, width=32, ffn=64, heads=2, **tiny)
    torch.manual_seed(0)
    teacher = build_model(tarch)
    arch = ArchConfig(depth=2, width=32, ffn=64, heads=2, **tiny)  # DistilHuBERT-like: teacher width, fewer layers
    torch.manual_seed(1)
    student = build_model(arch)
    fresh = {k: v.clone() for k, v in student.state_dict().items()}
    copied = init_from_teacher(student, arch, teacher, tarch) + init_encoder_from_teacher(student, arch, teacher, tarch)
    assert copied == ["feature_extractor", "feature_projection", "pos_conv", "layers.0-1"]
    sd, tsd = student.state_dict(), teacher.state_dict()
    ref = _reference_distilhubert_sources(sd, arch.depth, tarch.depth)
    assert any(".pos_conv_embed." in k for k in ref) and any(".layers.1." in k for k in ref)
    for k, v in sd.items():
        if k in ref:
            assert torch.equal(v, tsd[ref[k]]), k
        else:  # everything else keeps the student's own init (e.g. the encoder layer norm)
            assert torch.equal(v, fresh[k]), k
    assert "encoder.transformer.layer_norm.weight" not in ref
    # same outputs of the copied layers on the same input
    x = torch.randn(1, 9, 32)
    student.eval(), teacher.eval()  # no dropout
    assert torch.allclose(student.encoder.transformer.layers[1](x)[0], teacher.encoder.transformer.layers[1](x)[0])
    # a narrower student keeps its random encoder
    narrow = ArchConfig(depth=4, width=16, ffn=32, heads=2, **tiny)
    s2 = build_model(narrow)
    before = {k: v.clone() for k, v in s2.state_dict().items()}
    assert init_encoder_from_teacher(s2, narrow, teacher, tarch) == []
    assert all(torch.equal(v, before[k]) for k, v in s2.state_dict().items())
    # deeper than the teacher: its T layers are copied, the rest stay random
    deep = ArchConfig(depth=4, width=32, ffn=64, heads=2, **tiny)
    s3 = build_model(deep)
    assert init_encoder_from_teacher(s3, deep, teacher, tarch) == ["pos_conv", "layers.0-2"]
    assert not torch.equal(s3.encoder.transformer.layers[3].feed_forward.output_dense.weight,
                           teacher.encoder.transformer.layers[2].feed_forward.output_dense.weight)
