"""Teacher import from other toolkits' HuBERT checkpoints, and export to transformers.

Import (``import_checkpoint(fmt, src, out)``) reads the source file(s) as plain tensors,
derives an :class:`ArchConfig` from the source's own config, renames every weight to
torchaudio's ``Wav2Vec2Model`` names and writes a deepwide checkpoint. Formats:

``hf``
    a transformers ``HubertModel`` / ``Wav2Vec2Model`` directory (config.json and
    model.safetensors, sharded safetensors or pytorch_model.bin); ``*ForCTC`` and
    ``*ForPreTraining`` directories work too (their heads are dropped).
``fairseq``
    a fairseq HuBERT checkpoint (``.pt`` with ``cfg`` (or legacy ``args``) and
    ``model``), pretrained or CTC fine-tuned. fairseq itself is not needed.
``s3prl-hubert``
    s3prl's converted HuBERT checkpoint (``task_cfg``, ``model_cfg``, ``model_weight``,
    ``dictionaries_symbols``), as written by ``s3prl/upstream/hubert/convert.py``.

Pretraining heads (``final_proj``, ``label_embs_concat``, ``mask_emb``, quantizers, CTC
heads) are not part of an encoder and are dropped; any other weight the mapping does not
know, or a missing or mis-shaped one, is a ``DeepwideError`` naming the file and key.
torchaudio's own ``import_huggingface_model`` / ``import_fairseq_model`` need live
transformers / fairseq model objects (the fairseq one needs fairseq installed), so the
mapping here works on the saved tensors instead.

Export (``export_hf(ckpt, outdir)``) writes a transformers ``HubertModel`` directory
(config.json, model.safetensors, preprocessor_config.json). Its ``hidden_states`` (with
``output_hidden_states=True``) are the L+1 states of
:func:`deepwide.models.arch.hidden_states`.

Name correspondence (ours <- HF <- fairseq)::

    feature_extractor.conv_layers.i.conv      <- same          <- feature_extractor.conv_layers.i.0
    feature_extractor.conv_layers.i.layer_norm<- same          <- ...conv_layers.0.2 (group norm) / .i.2.1 (layer norm)
    encoder.feature_projection.layer_norm     <- feature_projection.layer_norm <- layer_norm
    encoder.feature_projection.projection     <- feature_projection.projection <- post_extract_proj
    encoder.transformer.pos_conv_embed.conv   <- encoder.pos_conv_embed.conv   <- encoder.pos_conv.0
    encoder.transformer.layer_norm            <- encoder.layer_norm            <- encoder.layer_norm
    encoder.transformer.layers.n.attention.{q,k,v,out}_proj <- encoder.layers.n.attention.* <- encoder.layers.n.self_attn.*
    encoder.transformer.layers.n.layer_norm   <- encoder.layers.n.layer_norm   <- encoder.layers.n.self_attn_layer_norm
    encoder.transformer.layers.n.feed_forward.intermediate_dense <- same <- encoder.layers.n.fc1
    encoder.transformer.layers.n.feed_forward.output_dense       <- same <- encoder.layers.n.fc2
    encoder.transformer.layers.n.final_layer_norm                <- same <- encoder.layers.n.final_layer_norm

The positional conv is weight-normalised over dim 2 everywhere; its gain/direction are
``weight_g``/``weight_v`` in old files and ``parametrizations.weight.original0/1`` in new
ones (torchaudio and current transformers); both spellings are accepted.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, build_model
from deepwide.models.checkpoint import load_checkpoint, save_checkpoint
from deepwide.utils.io import atomic_path, existing, read_json_object, sha256_file

log = logging.getLogger(__name__)

FORMATS = ("hf", "fairseq", "s3prl-hubert")

_POS = "encoder.transformer.pos_conv_embed.conv."
_WN = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


# ----------------------------------------------------------------------------- import


def import_checkpoint(fmt: str, src: str | Path, out: str | Path, meta: dict[str, Any] | None = None):
    """Convert ``src`` (format ``fmt``) into a deepwide checkpoint at ``out``.

    Returns ``(model, arch, meta)`` like :func:`load_checkpoint`. ``meta`` records the
    source format, path, sha256 (of the weight file) and whether the source expects
    waveform normalisation (``normalize``); extra ``meta`` entries are merged in.
    """
    if fmt not in FORMATS:
        raise DeepwideError(f"unknown checkpoint format {fmt!r}; expected one of {', '.join(FORMATS)}")
    src = Path(src)
    if not src.exists():
        raise DeepwideError(f"{fmt} checkpoint not found: {src}")
    reader = {"hf": _read_hf, "fairseq": _read_fairseq, "s3prl-hubert": _read_s3prl}[fmt]
    arch, state, info, weight_file = reader(src)
    model = _load_strict(arch, state, weight_file)
    model.eval()
    full_meta = {
        "source": {"format": fmt, "path": str(src.resolve()), "sha256": sha256_file(weight_file), **info},
        "normalize": bool(info.get("normalize", False)),
        "role": "teacher",
    }
    full_meta.update(meta or {})
    save_checkpoint(out, model, arch, full_meta)
    log.info("imported %s checkpoint %s as %s (%s)", fmt, src, out, arch.name)
    return model, arch, full_meta


def _load_strict(arch: ArchConfig, state: dict[str, torch.Tensor], where: Path) -> torch.nn.Module:
    """Build ``arch`` and load ``state`` into it; every key must be present and fit."""
    model = build_model(arch)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise DeepwideError(f"{where}: weight(s) missing for the architecture {arch.name}: {', '.join(missing[:5])}")
    extra = [k for k in state if k not in expected]
    if extra:
        raise DeepwideError(f"{where}: weight(s) not in the architecture {arch.name}: {', '.join(extra[:5])}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise DeepwideError(
                f"{where}: weight {k} has shape {tuple(state[k].shape)}, the config's architecture "
                f"{arch.name} needs {tuple(v.shape)}"
            )
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return model


def _torch_load(path: Path, what: str) -> Any:
    try:
        # fairseq/s3prl files hold configs (dicts, argparse Namespace, omegaconf) besides tensors
        return torch.load(existing(path, what), map_location="cpu", weights_only=False)
    except Exception as err:
        raise DeepwideError(f"cannot read {what} {path}: {err}") from err


def checkpoint_depth(fmt: str, src: str | Path) -> int:
    """Transformer layers of a checkpoint to import, read from its config alone (the
    Snakefile needs the teacher's depth to plan the targets before the import runs)."""
    src = Path(src)
    if fmt == "hf":
        cfg_path = src / "config.json"
        try:
            return int(json.loads(cfg_path.read_text())["num_hidden_layers"])
        except FileNotFoundError:
            raise DeepwideError(f"hf checkpoint {src}: config.json not found") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise DeepwideError(f"{cfg_path}: no integer num_hidden_layers ({err})") from None
    if fmt not in ("fairseq", "s3prl-hubert"):
        raise DeepwideError(f"unknown checkpoint format {fmt!r} (hf, fairseq, s3prl-hubert)")
    if not src.is_file():
        raise DeepwideError(f"{fmt} checkpoint not found: {src}")
    try:  # mmap: the tensors are not read
        blob = torch.load(src, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:
        raise DeepwideError(f"cannot read {fmt} checkpoint {src}: {err}") from err
    if not isinstance(blob, Mapping):
        raise DeepwideError(f"{src}: not a {fmt} checkpoint (expected a dict)")
    if fmt == "s3prl-hubert":
        model_cfg = _plain(blob.get("model_cfg") or {})
    elif blob.get("cfg") is not None:
        model_cfg = _plain(blob["cfg"]).get("model") or {}
    else:
        model_cfg = _plain(blob.get("args") or {})
    if isinstance(model_cfg.get("w2v_args"), Mapping) and model_cfg["w2v_args"].get("model"):
        model_cfg = _plain(model_cfg["w2v_args"])["model"]
    return int(model_cfg.get("encoder_layers") or _FAIRSEQ_DEFAULTS["encoder_layers"])


# --- transformers directory


def _read_hf(src: Path):
    if not src.is_dir():
        raise DeepwideError(f"hf checkpoint {src} must be a directory with config.json and model weights")
    cfg_path = src / "config.json"
    cfg = read_json_object(cfg_path, f"hf checkpoint {src}: config.json")
    model_type = cfg.get("model_type")
    if model_type not in ("hubert", "wav2vec2"):
        raise DeepwideError(f"{cfg_path}: model_type {model_type!r} is not supported; expected hubert or wav2vec2")
    from transformers import AutoConfig

    config = AutoConfig.for_model(**cfg)  # fills transformers' defaults for absent fields
    arch = _arch_from_hf(config, cfg_path)
    weight_file, raw = _read_hf_weights(src)
    state = _map_hf_state(raw, weight_file)
    normalize = False
    pre = src / "preprocessor_config.json"
    if pre.is_file():
        normalize = bool(read_json_object(pre).get("do_normalize", False))
    info = {"model_type": model_type, "architectures": cfg.get("architectures"), "normalize": normalize}
    return arch, state, info, weight_file


# the ArchConfig fields that are one config field each in transformers and in fairseq:
# (ArchConfig field, type, transformers name, fairseq name)
_ARCH_FIELDS = (
    ("depth", int, "num_hidden_layers", "encoder_layers"),
    ("width", int, "hidden_size", "encoder_embed_dim"),
    ("ffn", int, "intermediate_size", "encoder_ffn_embed_dim"),
    ("heads", int, "num_attention_heads", "encoder_attention_heads"),
    ("conv_bias", bool, "conv_bias", "conv_bias"),
    ("pos_conv_kernel", int, "num_conv_pos_embeddings", "conv_pos"),
    ("pos_conv_groups", int, "num_conv_pos_embedding_groups", "conv_pos_groups"),
    ("layer_norm_first", bool, "do_stable_layer_norm", "layer_norm_first"),
    ("dropout", float, "hidden_dropout", "dropout"),
    ("attention_dropout", float, "attention_dropout", "attention_dropout"),
    ("activation_dropout", float, "activation_dropout", "activation_dropout"),
    ("projection_dropout", float, "feat_proj_dropout", "dropout_input"),
    ("layer_drop", float, "layerdrop", "encoder_layerdrop"),
)


def _arch_from_hf(c, where: Path) -> ArchConfig:
    def need(name, ok, value):
        if not ok:
            raise DeepwideError(f"{where}: {name}={value!r} is not supported by deepwide's encoder")

    need("hidden_act", c.hidden_act == "gelu", c.hidden_act)
    need("feat_extract_activation", c.feat_extract_activation == "gelu", c.feat_extract_activation)
    need("feat_extract_norm", c.feat_extract_norm in ("group", "layer"), c.feat_extract_norm)
    need("layer_norm_eps", abs(c.layer_norm_eps - 1e-5) < 1e-12, c.layer_norm_eps)
    need("feat_proj_layer_norm", getattr(c, "feat_proj_layer_norm", True), getattr(c, "feat_proj_layer_norm", None))
    need("conv_pos_batch_norm", not getattr(c, "conv_pos_batch_norm", False), getattr(c, "conv_pos_batch_norm", None))
    need("add_adapter", not getattr(c, "add_adapter", False), getattr(c, "add_adapter", None))
    need("num_feat_extract_layers", len(c.conv_dim) == len(c.conv_kernel) == len(c.conv_stride), c.num_feat_extract_layers)
    try:
        return ArchConfig(
            conv=list(zip(c.conv_dim, c.conv_kernel, c.conv_stride)),
            extractor_mode=f"{c.feat_extract_norm}_norm",
            **{field: kind(getattr(c, hf)) for field, kind, hf, _ in _ARCH_FIELDS},
        )
    except DeepwideError as err:
        raise DeepwideError(f"{where}: {err}") from err


def _read_hf_weights(src: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    single = src / "model.safetensors"
    index = src / "model.safetensors.index.json"
    binary = src / "pytorch_model.bin"
    try:
        if single.is_file():
            return single, load_file(single)
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_file(src / shard))
            return index, state
        if binary.is_file():
            return binary, torch.load(binary, map_location="cpu", weights_only=True)
    except Exception as err:
        bad = next(p for p in (single, index, binary) if p.is_file())
        raise DeepwideError(f"cannot read hf weights {bad}: {err}") from err
    raise DeepwideError(f"hf checkpoint {src}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


# HF keys that belong to heads or pretraining, not to the encoder
_HF_IGNORE = re.compile(r"^(masked_spec_embed|lm_head\.|project_hid\.|project_q\.|quantizer\.|final_proj\.|projector\.|classifier\.|layer_weights)")


def _map_hf_state(raw: Mapping[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    return _renamed(raw, _HF_IGNORE, _hf_to_ours, where, "HuBERT/wav2vec 2.0", strip=("hubert.", "wav2vec2."))


def _renamed(weights: Mapping[str, torch.Tensor], ignore: re.Pattern, rename, where: Path, what: str,
             strip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """``weights`` under our names: a key matching ``ignore`` (once a prefix in ``strip`` is
    removed) is left out; any other key ``rename`` does not know is an error naming it."""
    state = {}
    for key, value in weights.items():
        k = key
        for prefix in strip:
            if k.startswith(prefix):
                k = k[len(prefix):]
        if ignore.match(k):
            continue
        new = rename(k)
        if new is None:
            raise DeepwideError(f"{where}: unexpected weight {key!r} (not part of a {what} encoder)")
        state[new] = value
    return state


def _hf_to_ours(k: str) -> str | None:
    if k.startswith("feature_extractor.conv_layers."):
        return k
    if k.startswith("feature_projection."):
        return "encoder." + k
    if k.startswith("encoder.pos_conv_embed.conv."):
        rest = k[len("encoder.pos_conv_embed.conv."):]
        return _POS + _WN.get(rest, rest)
    if k.startswith("encoder.layer_norm.") or k.startswith("encoder.layers."):
        return "encoder.transformer." + k[len("encoder."):]
    return None


def _ours_to_hf(k: str) -> str:
    if k.startswith("encoder.feature_projection."):
        return k[len("encoder."):]
    if k.startswith("encoder.transformer."):
        return "encoder." + k[len("encoder.transformer."):]
    return k


# --- fairseq / s3prl


def _read_fairseq(src: Path):
    blob = _torch_load(src, "fairseq checkpoint")
    if not isinstance(blob, Mapping) or "model" not in blob:
        raise DeepwideError(f"{src}: not a fairseq checkpoint (expected a dict with 'model' and 'cfg' or 'args')")
    cfg = blob.get("cfg")
    if cfg is not None:
        cfg = _plain(cfg)
        model_cfg, task_cfg = cfg.get("model"), cfg.get("task") or {}
    elif blob.get("args") is not None:
        model_cfg = _plain(blob["args"])
        task_cfg = model_cfg
    else:
        raise DeepwideError(f"{src}: fairseq checkpoint has neither 'cfg' nor 'args'")
    if not isinstance(model_cfg, Mapping):
        raise DeepwideError(f"{src}: fairseq checkpoint has no model config (cfg.model)")
    weights = blob["model"]
    # CTC fine-tuned HuBERT: the encoder lives under w2v_encoder.w2v_model, its config in w2v_args
    if any(k.startswith("w2v_encoder.") for k in weights):
        w2v_args = _plain(model_cfg.get("w2v_args") or {})
        if not w2v_args.get("model"):
            raise DeepwideError(f"{src}: fine-tuned fairseq checkpoint without cfg.model.w2v_args.model")
        task_cfg = w2v_args.get("task") or task_cfg
        model_cfg = w2v_args["model"]
        weights = {k[len("w2v_encoder.w2v_model."):]: v for k, v in weights.items() if k.startswith("w2v_encoder.w2v_model.")}
    arch, state = _from_fairseq(model_cfg, weights, src)
    info = {"model_name": model_cfg.get("_name"), "normalize": bool(task_cfg.get("normalize", False))}
    return arch, state, info, src


def _read_s3prl(src: Path):
    blob = _torch_load(src, "s3prl-hubert checkpoint")
    if not isinstance(blob, Mapping):
        raise DeepwideError(f"{src}: not an s3prl converted checkpoint (a dict with task_cfg, model_cfg, model_weight)")
    for key in ("task_cfg", "model_cfg", "model_weight"):
        if key not in blob:
            raise DeepwideError(f"{src}: not an s3prl converted hubert checkpoint, key {key!r} is missing")
    model_cfg, task_cfg = _plain(blob["model_cfg"]), _plain(blob["task_cfg"])
    arch, state = _from_fairseq(model_cfg, blob["model_weight"], src)
    info = {"model_name": model_cfg.get("_name"), "normalize": bool(task_cfg.get("normalize", False))}
    return arch, state, info, src


def _plain(obj: Any) -> Any:
    """dict / omegaconf DictConfig / argparse Namespace -> plain dict (recursively)."""
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if type(obj).__name__ in ("DictConfig", "ListConfig"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


# fairseq HuBERT defaults (fairseq/models/hubert/hubert.py HubertConfig) for absent keys
_FAIRSEQ_DEFAULTS = {
    "extractor_mode": "default",
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "layer_norm_first": False,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "conv_bias": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "pos_conv_depth": 1,
}

_FAIRSEQ_IGNORE = re.compile(r"^(mask_emb|label_embs_concat|final_proj\.|target_glu\.|quantizer\.|project_q\.|proj\.|w2v_encoder\.proj\.|encoder\.version|_version)")


def _from_fairseq(model_cfg: Mapping, weights: Mapping[str, torch.Tensor], where: Path):
    c = {**_FAIRSEQ_DEFAULTS, **{k: v for k, v in model_cfg.items() if v is not None}}
    if c["activation_fn"] != "gelu":
        raise DeepwideError(f"{where}: activation_fn={c['activation_fn']!r} is not supported (gelu only)")
    if c["layer_type"] != "transformer":
        raise DeepwideError(f"{where}: layer_type={c['layer_type']!r} is not supported (transformer only)")
    if int(c["pos_conv_depth"]) != 1:
        raise DeepwideError(f"{where}: pos_conv_depth={c['pos_conv_depth']} is not supported (1 only)")
    if c["extractor_mode"] not in ("default", "layer_norm"):
        raise DeepwideError(f"{where}: extractor_mode={c['extractor_mode']!r} is not supported")
    conv = _parse_conv_layers(c["conv_feature_layers"], where)
    try:
        arch = ArchConfig(
            conv=conv,
            extractor_mode="group_norm" if c["extractor_mode"] == "default" else "layer_norm",
            **{field: kind(c[name]) for field, kind, _, name in _ARCH_FIELDS},
        )
    except DeepwideError as err:
        raise DeepwideError(f"{where}: {err}") from err
    state = _renamed(weights, _FAIRSEQ_IGNORE, _fairseq_to_ours, where, "HuBERT")
    # fairseq has no post_extract_proj when conv channels == width: it is the identity
    proj = "encoder.feature_projection.projection."
    if proj + "weight" not in state and conv[-1][0] == arch.width:
        state[proj + "weight"] = torch.eye(arch.width)
        state[proj + "bias"] = torch.zeros(arch.width)
    return arch, state


_LAYER = r"encoder.transformer.layers.\1."
# fairseq's parameter names -> ours (the positional conv's weight norm: _fairseq_to_ours)
_FAIRSEQ_RENAMES = tuple((re.compile(a), b) for a, b in (
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.(?:2|2\.1)\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"layer_norm\.(weight|bias)", r"encoder.feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"encoder.feature_projection.projection.\1"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.transformer.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(.+)", _LAYER + r"attention.\2"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(.+)", _LAYER + r"layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(.+)", _LAYER + r"feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(.+)", _LAYER + r"feed_forward.output_dense.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(.+)", _LAYER + r"final_layer_norm.\2"),
))


def _fairseq_to_ours(k: str) -> str | None:
    m = re.fullmatch(r"encoder\.pos_conv\.0\.(.+)", k)
    if m:
        return _POS + _WN.get(m[1], m[1])
    for pattern, name in _FAIRSEQ_RENAMES:
        m = pattern.fullmatch(k)
        if m:
            return m.expand(name)
    return None


def _parse_conv_layers(spec: Any, where: Path) -> list[tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers`` string, e.g. ``[(512,10,5)] + [(512,3,2)] * 4``.

    Evaluated over a whitelist of literal syntax (lists, tuples, ints, + and *) only.
    """
    if isinstance(spec, (list, tuple)):
        value = spec
    else:
        try:
            value = _safe_eval(ast.parse(str(spec), mode="eval").body)
        except (SyntaxError, ValueError, TypeError) as err:
            raise DeepwideError(f"{where}: cannot parse conv_feature_layers {spec!r}: {err}") from err
    try:
        layers = [tuple(int(x) for x in layer) for layer in value]
        if not layers or any(len(layer) != 3 for layer in layers):
            raise ValueError
    except (TypeError, ValueError):
        raise DeepwideError(f"{where}: conv_feature_layers {spec!r} is not a list of (dim, kernel, stride)") from None
    return layers


def _safe_eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_safe_eval(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _safe_eval(node.left), _safe_eval(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(f"unsupported syntax {ast.dump(node)[:60]}")


# ----------------------------------------------------------------------------- export


def hf_config(arch: ArchConfig):
    """transformers ``HubertConfig`` of the same shape as ``arch``."""
    from transformers import HubertConfig

    return HubertConfig(
        vocab_size=32,
        hidden_act="gelu",
        feat_proj_layer_norm=True,
        final_dropout=0.0,
        layer_norm_eps=1e-5,
        feat_extract_norm=arch.extractor_mode.split("_")[0],
        feat_extract_activation="gelu",
        conv_dim=[c for c, _, _ in arch.conv],
        conv_stride=[s for _, _, s in arch.conv],
        conv_kernel=[k for _, k, _ in arch.conv],
        conv_pos_batch_norm=False,
        **{hf: getattr(arch, field) for field, _, hf, _ in _ARCH_FIELDS},
        # a frozen feature extractor: no SpecAugment, even if someone calls .train()
        apply_spec_augment=False,
        architectures=["HubertModel"],
    )


HF_EXPORT_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "deepwide.json")


def export_hf(ckpt: str | Path, outdir: str | Path, force: bool = False) -> Path:
    """Write checkpoint ``ckpt`` as a transformers HubertModel directory ``outdir``.

    The directory holds config.json, model.safetensors and preprocessor_config.json
    (16 kHz, ``do_normalize`` from the checkpoint's meta, attention masks on) and
    deepwide.json; it is written in a temporary sibling and renamed into place on success.
    An existing non-empty ``outdir`` is a DeepwideError (nothing is touched) unless
    ``force``: then only the files the export writes are replaced, all else is kept.
    """
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise DeepwideError(f"export hf: {outdir} exists and is not a folder: it is left untouched; name a new folder")
    if not force and outdir.is_dir() and any(outdir.iterdir()):
        raise DeepwideError(f"export hf: {outdir} exists and is not empty: it is left untouched. Name a new folder, or pass "
                            f"--force to replace only the files the export writes ({', '.join(HF_EXPORT_FILES)})")
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    model, arch, meta = load_checkpoint(ckpt)
    config = hf_config(arch)
    hf = HubertModel(config).eval()
    ours = model.state_dict()
    mapped = {_ours_to_hf(k): v for k, v in ours.items()}
    target = hf.state_dict()
    missing = sorted(set(target) - set(mapped))
    extra = sorted(set(mapped) - set(target))
    if extra or [k for k in missing if k != "masked_spec_embed"]:
        raise DeepwideError(f"{ckpt}: cannot map weights to transformers HubertModel (missing {missing[:5]}, unexpected {extra[:5]})")
    mapped["masked_spec_embed"] = target["masked_spec_embed"].zero_()
    hf.load_state_dict(mapped, strict=True)
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=bool(meta.get("normalize", False)),
        return_attention_mask=True,
    )
    with atomic_path(outdir, is_dir=True, merge=force) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        extractor.save_pretrained(tmp)
        (tmp / "deepwide.json").write_text(json.dumps({"arch": arch.to_dict(), "meta": meta, "source_checkpoint": str(Path(ckpt).resolve())}, indent=2, default=str))
    log.info("exported %s (%s) to %s", ckpt, arch.name, outdir)
    return outdir
