"""The planner: a config -> every job of every stage, its identity and its paths
(:class:`Study`), and the ``plan`` commands (cost, resources, students, check).

Config-time code only: importing it loads no torch, numpy or pandas, and no stage runtime.
"""

from deepwide.plan.distill import StudentJob
from deepwide.plan.study import Study
from deepwide.plan.superb import SuperbJob

__all__ = ["Study", "StudentJob", "SuperbJob"]
