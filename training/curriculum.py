"""The three-stage curriculum: which stage training is in, and what trains in each.

``stage_plan`` is the one place that says what a stage trains; ``Curriculum`` (the original
``status_manager``) says when a stage ends.
"""
import math
from dataclasses import dataclass

STAGES = ("frozen audio encoder", "audio encoder fine-tuned", "lip-reading expert on", "done")
DONE = len(STAGES) - 1
FINETUNED_LAYERS = 3            # the audio encoder's last three transformer layers (9-11 of BASE)


@dataclass(frozen=True)
class StagePlan:
    """What one stage trains, besides the generator's face networks and the discriminator (always)."""
    audio_encoder: bool         # the audio encoder's last FINETUNED_LAYERS layers get gradients (stage 1 on)
    expert_losses: bool         # the expert's lip loss and the contrastive loss join the objective (stage 2 on)


def stage_plan(stage: int) -> StagePlan:
    return StagePlan(audio_encoder=stage >= 1, expert_losses=stage >= 2)


class Curriculum:
    """The original ``status_manager``: after more than ``patience`` validations without a new
    lowest L1, move to the next stage. Bounded by per-stage step counts (index = stage): a plateau
    ends stage s only after ``min_steps[s]`` steps in it, and stage s ends after ``max_steps[s]``
    steps in it whatever the L1 does (0: no bound). Equal bounds give a fixed schedule."""

    def __init__(self, patience: int = 5, stage: int = 0, min_steps=(0, 0, 0), max_steps=(0, 0, 0)):
        self.best, self.waited, self.stage, self.patience = math.inf, 0, stage, patience
        self.min_steps, self.max_steps = tuple(min_steps), tuple(max_steps)
        self.stage_start = 0        # the step at which the current stage began

    def begin_stage_at(self, step: int) -> None:
        """The current stage counts its steps from ``step`` (a run started from a checkpoint of that step)."""
        self.stage_start = step

    def _bound(self, bounds) -> int:
        return bounds[self.stage] if self.stage < len(bounds) else 0

    def _advance(self, step: int) -> bool:
        self.stage, self.waited, self.stage_start = self.stage + 1, 0, step
        return True

    def validated(self, value: float, step: int) -> bool:
        """A validation L1 after ``step`` steps; True when the stage changed."""
        if value < self.best:
            self.best, self.waited = value, 0
        else:
            self.waited += 1
        ran = step - self.stage_start
        if self.waited > self.patience and ran > 0 and ran >= self._bound(self.min_steps):
            return self._advance(step)
        return False

    def stepped(self, step: int) -> bool:
        """Called after every step; True when the stage reached its maximum length."""
        limit = self._bound(self.max_steps)
        if self.stage < DONE and limit and step - self.stage_start >= limit:
            return self._advance(step)
        return False

    def state_dict(self):
        return {"best": self.best, "waited": self.waited, "stage": self.stage, "stage_start": self.stage_start}

    def load_state_dict(self, s):
        self.best, self.waited, self.stage = s["best"], s["waited"], s["stage"]
        self.stage_start = s.get("stage_start", 0)
