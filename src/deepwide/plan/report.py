"""The report stage's jobs: per-upstream cost, CKA and KD-loss files, the collected
results, the tables and the figures."""

from __future__ import annotations

from pathlib import Path

from deepwide.utils.io import canonical_json


class ReportPlan:
    """The report part of :class:`deepwide.plan.Study`."""

    @property
    def report_dir(self) -> Path:
        return self.results / "report"

    def report_file(self, name: str) -> str:
        return str(self.report_dir / name)

    @property
    def report_heldout(self) -> str:
        h = self.config["report"]["heldout"]
        return self.manifest(h["corpus"], h["split"])

    def report_result_files(self) -> list[str]:
        return [self.superb_result(j.upstream, j.task, j.lr, j.seed) for j in self.superb_jobs] + self.qbe_results

    def report_job_outputs(self) -> list[str]:
        """What report_collect waits for: every SUPERB job's heads.json and QbE's results."""
        return [self.superb_heads_file(u, t) for u, t in self.superb_sweeps] + self.qbe_results

    @property
    def report_upstreams(self) -> list[str]:
        return list(self.upstreams) if (self.superb_tasks or self.qbe_enabled) else []

    def report_cost(self, upstream: str) -> str:
        return str(self.report_dir / "cost" / f"{upstream}.json")

    def report_cka(self, upstream: str) -> str:
        return str(self.report_dir / "cka" / f"{upstream}.parquet")

    @property
    def report_costs(self) -> list[str]:
        return [self.report_cost(u) for u in self.report_upstreams if self.upstream_checkpoint(u)]

    @property
    def report_students(self) -> list[str]:
        ups = set(self.report_upstreams)
        return [u for u in self.student_upstreams if u in ups]

    @property
    def report_infos(self) -> list[str]:
        return [self.student_info(u) for u in self.report_students]

    @property
    def report_ckas(self) -> list[str]:
        if "teacher" not in self.upstreams:
            return []
        return [self.report_cka(u) for u in self.report_students]

    def report_kdloss(self, upstream: str) -> str:
        return str(self.report_dir / "kd_loss" / f"{upstream}.parquet")

    @property
    def report_kdlosses(self) -> list[str]:
        """Held-out KD loss per student (needs the teacher, as CKA does)."""
        if "teacher" not in self.upstreams:
            return []
        return [self.report_kdloss(u) for u in self.report_students]

    def report_identity(self, section: str) -> str:
        """The report.<section> options of a report rule (tables and figures: with the reference)."""
        r = self.config["report"]
        return canonical_json({**r[section], "reference": r["reference"]} if section in ("tables", "figures") else r[section])

    @property
    def report_teacher_info(self) -> list[str]:
        """The pretrained teacher's info.json (its cka_first_last feeds the report's warning); [] for an import."""
        return [self.teacher_info] if self.teacher_source == "pretrain" else []

    REPORT_TABLES = ("results", "grid", "families", "score", "trend", "guard", "verdict", "kd_loss")
    REPORT_FIGURES = ("depth", "heatmap", "layer_weights", "cka", "pareto", "kd_loss")

    def report_table(self, name: str, ext: str) -> str:
        return str(self.report_dir / "tables" / f"{name}.{ext}")

    def report_figure(self, name: str, ext: str) -> str:
        return str(self.report_dir / "figures" / f"{name}.{ext}")

    @property
    def report_outputs(self) -> list[str]:
        if not self.report_upstreams:
            return []
        return ([self.report_table(n, e) for n in self.REPORT_TABLES for e in ("md", "csv", "tex")]
                + [self.report_figure(n, e) for n in self.REPORT_FIGURES for e in ("png", "pdf")])
