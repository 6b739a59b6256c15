"""ASV's x-vector head at a chosen TDNN width (``superb.asv.downstream.tdnn_size``): s3prl's
five TDNN layers, same contexts and dilations, only the width changed."""

import torch

from deepwide.superb.problems import problem_class


def _tdnns(model):
    return list(model.tdnns.module)


def test_tdnn_size_rebuilds_the_backbone_at_that_width():
    asv = problem_class("asv")()
    ref = asv.build_downstream({"hidden_size": 8, "aggregation_size": 32, "output_size": 8}, 20, 5, 160)
    small = asv.build_downstream({"hidden_size": 8, "tdnn_size": 16, "aggregation_size": 32, "output_size": 8}, 20, 5, 160)
    # s3prl's own backbone: 512 channels whatever hidden_size says
    assert [layer.kernel.out_features for layer in _tdnns(ref)] == [512, 512, 512, 512, 32]
    assert [layer.kernel.out_features for layer in _tdnns(small)] == [16, 16, 16, 16, 32]
    assert [(layer.context_size, layer.dilation) for layer in _tdnns(small)] == \
        [(layer.context_size, layer.dilation) for layer in _tdnns(ref)] == [(5, 1), (3, 2), (3, 3), (1, 1), (1, 1)]
    x, xlen = torch.randn(3, 50, 20), torch.tensor([50, 40, 30])
    assert small(x, xlen).shape == ref(x, xlen).shape == (3, 8)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in ref.parameters()) / 20
