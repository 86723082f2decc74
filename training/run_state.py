"""The mutable progress of a training run, as one object saved and restored whole."""
import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List

# The state files before RunState kept these fields at the top level of the state dict (step 0 .. N of
# any run begun before it); they still load.
_FLAT_FIELDS = ("step", "epoch", "epoch_step", "rollbacks", "ooms", "history", "train_log", "recent")


@dataclass
class RunState:
    step: int = 0                   # optimisation steps taken (a skipped one counts)
    epoch: int = 0
    epoch_step: int = 0             # steps taken in this epoch
    rollbacks: int = 0              # divergence rollbacks so far (each gives a new data order)
    ooms: int = 0                   # out-of-memory steps in a row
    high_disc: int = 0              # steps in a row whose discriminator loss was above the threshold
    history: List[Dict[str, float]] = field(default_factory=list)     # validation results
    train_log: List[Dict[str, float]] = field(default_factory=list)   # mean training losses per log line
    recent: List[Dict[str, float]] = field(default_factory=list)      # train losses since the last log line

    def count_step(self, steps_per_epoch: int) -> bool:
        """The step just taken (or skipped) counts; True when it ended the epoch."""
        self.step += 1
        self.epoch_step += 1
        if self.epoch_step == steps_per_epoch:
            self.epoch, self.epoch_step = self.epoch + 1, 0
            return True
        return False

    def count_disc(self, disc: float, threshold: float) -> None:
        """One more (or no longer) a step with the discriminator loss above ``threshold``."""
        self.high_disc = self.high_disc + 1 if disc > threshold else 0

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: Dict) -> "RunState":
        """The run state of a state file: its ``run`` entry, or the flat fields of one written before it."""
        if "run" in state:
            return cls(**state["run"])
        flat = {name: state[name] for name in _FLAT_FIELDS if name in state}
        return cls(**{k: (list(v) if isinstance(v, list) else v) for k, v in flat.items()})
