"""Frame-level features that become HuBERT pseudo-labels.

Iteration 1 clusters MFCC + deltas + delta-deltas computed at the teacher's frame rate;
iteration 2 clusters one hidden layer of the iteration-1 teacher. Either way there must be
exactly one label per output frame of the conv front end, so the MFCC hop equals the front
end's total stride (320 samples = 20 ms for HuBERT's kernels/strides) and the frame count
is aligned to :func:`conv_num_frames`.
"""

from __future__ import annotations


import numpy as np
import torch

from deepwide.errors import DeepwideError
from deepwide.models.arch import num_frames as conv_num_frames, receptive_field  # noqa: F401


class MFCCFeaturizer:
    """MFCC (+ deltas + delta-deltas) with one frame per conv front-end output frame.

    Returns ``(frames, 3 * n_mfcc)`` float32 numpy arrays.
    """

    def __init__(self, conv, sample_rate: int = 16000, n_mfcc: int = 13, n_mels: int = 40, window_ms: float = 25.0):
        import torchaudio

        self.conv = [tuple(c) for c in conv]
        self.hop = 1
        for _, _, stride in self.conv:
            self.hop *= stride
        self.sample_rate = sample_rate
        win = int(round(sample_rate * window_ms / 1000.0))
        # n_fft = window: frame i covers samples [i*hop, i*hop + win), like the conv front end's
        # frame i covers [i*hop, i*hop + receptive_field) (400 samples for HuBERT's front end)
        n_fft = win
        self.win = win
        self.transform = torchaudio.transforms.MFCC(
            sample_rate=sample_rate,
            n_mfcc=n_mfcc,
            melkwargs=dict(n_fft=n_fft, win_length=win, hop_length=self.hop, n_mels=n_mels, center=False),
        )

    @property
    def dim(self) -> int:
        return 3 * self.transform.n_mfcc

    def __call__(self, wav: np.ndarray | torch.Tensor) -> np.ndarray:
        import torchaudio.functional as AF

        wav = torch.as_tensor(wav, dtype=torch.float32).reshape(-1)
        target = conv_num_frames(wav.numel(), self.conv)
        if target <= 0:
            raise DeepwideError(f"audio of {wav.numel()} samples is shorter than one frame of the conv front end")
        if wav.numel() < self.win:
            wav = torch.nn.functional.pad(wav, (0, self.win - wav.numel()))
        with torch.no_grad():
            mfcc = self.transform(wav)  # (n_mfcc, frames)
            d1 = AF.compute_deltas(mfcc)
            d2 = AF.compute_deltas(d1)
            feats = torch.cat([mfcc, d1, d2], dim=0).T.contiguous()  # (frames, 3 n_mfcc)
        return align_frames(feats.numpy(), target)


def align_frames(feats: np.ndarray, target: int) -> np.ndarray:
    """Cut or extend (repeating the last frame) ``feats`` to ``target`` frames."""
    n = feats.shape[0]
    if n >= target:
        return np.ascontiguousarray(feats[:target], dtype=np.float32)
    pad = np.repeat(feats[-1:], target - n, axis=0)
    return np.concatenate([feats, pad], axis=0).astype(np.float32)


@torch.no_grad()
def layer_features(model: torch.nn.Module, wav: np.ndarray, layer: int, device: torch.device | str = "cpu") -> np.ndarray:
    """Hidden state ``layer`` (0 = transformer input) of a Wav2Vec2Model, ``(frames, width)``."""
    from deepwide.models.arch import hidden_states

    x = torch.as_tensor(wav, dtype=torch.float32, device=device).reshape(1, -1)
    states, _ = hidden_states(model, x)
    if not 0 <= layer < len(states):
        raise DeepwideError(f"teacher.pretrain.iteration2.layer: {layer} is not in 0..{len(states) - 1}")
    return states[layer][0].float().cpu().numpy()
