"""The full-scale paper.yaml on a tree of placeholder files: every file and folder the
stages check before any job runs, in the real layouts, under a tmp folder. A dry run reads
none of them except the teacher checkpoint's config (its depth plans the targets)."""

from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "workflow" / "configs" / "paper.yaml"

PLACEHOLDER_FILES = [
    # every file and folder the stages check before any job runs, in the real layouts
    *[f"LibriSpeech/{s}/19/198/19-198-0000.flac" for s in
      ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "test-clean")],
    *[f"LibriSpeech/{s}/19/198/19-198.trans.txt" for s in
      ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "test-clean")],
    "LibriSpeech/SPEAKERS.TXT",
    "superb/lexicon/librispeech-lexicon-200k-g2p.txt", "superb/lexicon/librispeech-lexicon-allothers-g2p.txt",
    "VoxCeleb1/dev/wav/id10001/1zcIwhmdeo4/00001.wav", "VoxCeleb1/test/wav/id10270/5r0dWxy17C8/00001.wav", "VoxCeleb1/iden_split.txt", "VoxCeleb1/voxceleb1_test_v2.txt",
    "speech_commands_v0.01/_background_noise_/white_noise.wav", "speech_commands_v0.01/yes/0a7c2a8d_nohash_0.wav",
    "speech_commands_v0.01/validation_list.txt", "speech_commands_v0.01/testing_list.txt",
    "speech_commands_test_set_v0.01/yes/0a7c2a8d_nohash_0.wav",
    *[f"fluent_speech_commands_dataset/data/{s}_data.csv" for s in ("train", "valid", "test")],
    "fluent_speech_commands_dataset/wavs/speakers/2BqVo8kVB2Skwgyb/0a3129c0-4474-11e9-a9a5-5dbec3b8816a.wav",
    *[f"IEMOCAP_full_release/Session{i}/dialog/EmoEvaluation/Ses0{i}F_impro01.txt" for i in range(1, 6)],
    *[f"IEMOCAP_full_release/Session{i}/sentences/wav/Ses0{i}F_impro01/Ses0{i}F_impro01_F000.wav" for i in range(1, 6)],
    *[f"superb/librimix/data/{s}/{f}" for s in ("train", "dev", "test") for f in ("wav.scp", "reco2dur", "segments", "utt2spk")],
    "superb/SNIPS/all.iob.snips.txt", *[f"superb/SNIPS/{s}/Ezra-snips-{s}-0.wav" for s in ("train", "valid", "test")],
    *[f"quesst14Database/scoring/{f}" for f in ("language_key_utterances.lst", "language_key_dev.lst", "language_key_eval.lst")],
    *[f"quesst14Database/scoring/groundtruth_quesst14_{s}/quesst14.ecf.xml" for s in ("dev", "eval")],
    "models/hubert_base_ls960.pt",
]


def placeholders(node, data: Path):
    """The config with every /data/... path moved under ``data`` (a tmp folder)."""
    if isinstance(node, dict):
        return {k: placeholders(v, data) for k, v in node.items()}
    if isinstance(node, list):
        return [placeholders(v, data) for v in node]
    if isinstance(node, str) and node.startswith("/data/"):
        return str(data / node[len("/data/"):])
    return node



def paper_config(tmp: Path) -> Path:
    """paper.yaml with its /data roots moved under tmp/data (placeholders written)."""
    data = tmp / "data"
    for rel in PLACEHOLDER_FILES:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).touch()
    # a fairseq checkpoint holding only its config: HuBERT Base's 12 layers
    torch.save({"cfg": {"model": {"_name": "hubert", "encoder_layers": 12}}, "model": {}},
               data / "models" / "hubert_base_ls960.pt")
    cfg = placeholders(yaml.safe_load(PAPER.read_text()), data)
    path = tmp / "paper.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
