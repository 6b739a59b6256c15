"""The teacher stage's job: pretrain one (its shape checked before any job runs), import
a checkpoint (its path checked, its depth read from its own config) or draw an untrained
one (``random``: HuBERT Base unless teacher.random.arch says otherwise)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, conv_layers, hubert_base
from deepwide.teacher.spec import teacher_arch

# teacher depth a plan assumes while the checkpoint to import is missing (Base-sized models)
PLAN_TEACHER_DEPTH = hubert_base().depth


def import_source(config: dict) -> tuple[str, Path]:
    """``(format, path)`` of the checkpoint to import; errors name the config key."""
    imp = config["teacher"]["import"]
    fmt, path = imp["format"], imp["path"]
    if not path:
        raise DeepwideError(
            "config key teacher.import.path: required when teacher.source is 'import' "
            f"(the {fmt} checkpoint to convert)"
        )
    p = Path(path).expanduser()
    if not p.exists():
        raise DeepwideError(f"config key teacher.import.path: {p} does not exist")
    if fmt == "hf" and not p.is_dir():
        raise DeepwideError(f"config key teacher.import.path: format hf needs a transformers model directory, {p} is a file")
    if fmt != "hf" and not p.is_file():
        raise DeepwideError(f"config key teacher.import.path: format {fmt} needs a .pt file, {p} is a directory")
    return fmt, p.resolve()


def random_arch(config: dict) -> ArchConfig:
    """teacher.random.arch over HuBERT Base (the fields ``teacher random --arch-json`` fills);
    errors name the config key."""
    fields = dict(config["teacher"]["random"]["arch"])
    if "conv_channels" in fields:
        fields["conv"] = conv_layers(fields.pop("conv_channels"))
    try:
        return ArchConfig.from_dict({**hubert_base().to_dict(), **fields})
    except DeepwideError as err:
        raise DeepwideError(f"config key teacher.random.arch: {err}") from None


class TeacherPlan:
    """The teacher part of :class:`deepwide.plan.Study`."""

    def check_teacher(self) -> None:
        """The pretrained teacher's shape, checked before any job (heads and pos_conv_groups
        dividing width, sizes >= 1): a bad one failed inside teacher_pretrain, after synthesis."""
        if self.teacher_source == "random":
            random_arch(self.config)
        if self.teacher_source != "pretrain":
            return
        try:
            teacher_arch(self.config["teacher"]["pretrain"]["arch"])
        except DeepwideError as err:
            raise DeepwideError(f"config key teacher.pretrain.arch: {err}") from None
        pt = self.config["teacher"]["pretrain"]
        if pt["corpus"] in self.corpora:  # a split its prepare job does not write: no rule makes it
            made = self.manifests(pt["corpus"])
            splits = pt["train_split"] if isinstance(pt["train_split"], list) else [pt["train_split"]]
            lacking = [s for s in splits if self.manifest(pt["corpus"], s) not in made]
            if lacking:
                raise DeepwideError(f"config key teacher.pretrain.train_split: {', '.join(lacking)} is not a manifest of "
                                    f"corpus.{pt['corpus']} (its prepare job writes "
                                    f"{', '.join(Path(m).stem for m in made if m.endswith('.parquet'))}"
                                    f"{'; add it to corpus.librispeech.splits' if pt['corpus'] == 'librispeech' else ''})")

    @property
    def teacher_dir(self) -> Path:
        return self.results / "teacher"

    def teacher_file(self, name: str) -> str:
        return str(self.teacher_dir / name)

    @property
    def teacher_ckpt(self) -> str:
        return self.teacher_file("teacher.pt")

    @property
    def teacher_info(self) -> str:
        return self.teacher_file("info.json")

    @property
    def teacher_source(self) -> str:
        return self.config["teacher"]["source"]

    def teacher_import(self) -> tuple[str, Path]:
        return import_source(self.config)

    def teacher_pretrain_manifests(self) -> dict[str, str | list[str]]:
        """The pretrain rule's inputs: ``train`` (one manifest for a split named by a string,
        one per split for a list: ``teacher pretrain --manifest`` takes several) and ``valid``."""
        pt = self.config["teacher"]["pretrain"]
        split = pt["train_split"]
        if isinstance(split, list):
            out = {"train": [self.manifest(pt["corpus"], s) for s in split]}
        else:
            out = {"train": self.manifest(pt["corpus"], split)}
        if pt["valid_split"]:
            out["valid"] = self.manifest(pt["corpus"], pt["valid_split"])
        return out

    @cached_property
    def teacher_depth(self) -> int:
        """Transformer layers of the teacher, known before it exists (config, or the
        imported checkpoint's own config)."""
        if self.teacher_source == "pretrain":
            return int(self.config["teacher"]["pretrain"]["arch"]["depth"])
        if self.teacher_source == "random":
            return random_arch(self.config).depth
        try:
            fmt, path = self.teacher_import()
        except DeepwideError as err:
            if not self.plan:
                raise
            self._warn(f"{err}; the plan assumes a {PLAN_TEACHER_DEPTH}-layer teacher (HuBERT/wav2vec 2.0 Base) "
                       "for the students' target layers")
            return PLAN_TEACHER_DEPTH
        # a fairseq/s3prl checkpoint's config is read with torch.load (mmap, no tensors): the
        # one place a plan imports torch, and only for teacher.source: import
        from deepwide.models.convert import checkpoint_depth

        return checkpoint_depth(fmt, path)
