"""Multi-Conv DAPO for the gated memory loop, on the engine's rollout API."""
from grumem.trainer.config import TrainerConfig
from grumem.trainer.dapo import DAPOTrainer
from grumem.trainer.policy import Policy

__all__ = ["DAPOTrainer", "Policy", "TrainerConfig"]
