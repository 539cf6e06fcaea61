"""The GRU-Mem memory loop (and the MemAgent baseline) as a client of the engine's request API: settings, prompts,
the turn format and its logits processor, the gate prior, trajectories."""
from grumem.agent.config import AgentConfig, paper_preset
from grumem.agent.format_processor import TurnFormat
from grumem.agent.loop import MemoryAgent
from grumem.agent.loop_run import LoopRun
from grumem.agent.trajectory import TurnRecord, Trajectory
from grumem.agent.turn_format import FormatArgs

__all__ = ["AgentConfig", "FormatArgs", "LoopRun", "MemoryAgent", "Trajectory", "TurnFormat", "TurnRecord",
           "paper_preset"]
