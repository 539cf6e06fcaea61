"""MemoryAgent: the GRU-Mem gated memory loop (and the MemAgent baseline) over many documents at once.

Each document is read chunk by chunk; a finished turn immediately enqueues that document's next turn, so documents
of different lengths never wait for each other. grumem: the memory changes only on <check>yes</check>, and
<next>end</next> stops reading (with the exit gate on); memagent: the memory is every turn's whole response.
With the gate prior on (gate_prior.py), a document first scores its question after an empty section.
"""
from collections.abc import Callable

from grumem.agent.config import AgentConfig
from grumem.agent.format_processor import TurnFormat
from grumem.agent.loop_run import LoopRun
from grumem.agent.prompts import PromptBuilder
from grumem.agent.reader import Reader, TurnSampling
from grumem.agent.trajectory import TurnRecord, Trajectory
from grumem.engine import LLM
from grumem.engine.seeding import mix_seed
from grumem.tasks import Sample


class MemoryAgent:
    def __init__(self, llm: LLM, config: AgentConfig | None = None):
        self.llm, self.config = llm, config or AgentConfig()
        self.prompts = PromptBuilder(llm.tokenizer, self.config.mode, self.config.layout)
        self.turn_format = TurnFormat.of(llm)

    def run(self, samples: list[Sample], progress: bool = False,
            on_finish: Callable[[Trajectory], None] | None = None) -> list[Trajectory]:
        """Reads every document once; returns one trajectory per sample, in order. `on_finish` gets each trajectory
        as soon as its document is done (answered, failed, or aborted by an exception)."""
        run = self.new_run(samples, progress, on_finish)
        self._drive(run)
        return [group[0].traj for group in run.groups]

    def new_run(self, samples: list[Sample], progress: bool = False,
                on_finish: Callable[[Trajectory], None] | None = None,
                on_turn: Callable[[Trajectory, TurnRecord], None] | None = None,
                resume: list[Trajectory | None] | None = None) -> LoopRun:
        """The documents as a run not yet started, for a caller that steps a shared engine itself: it calls
        `run.start()`, then hands every engine output to `run.handle` until `run.done` (as `run` does).
        `resume[i]`: an unfinished trajectory of sample i to go on from (Reader.resume)."""
        config = self.config
        groups = [[Reader(self, s, Trajectory(i), TurnSampling(
            config.temperature, config.top_p, None if config.seed is None else mix_seed(config.seed, i)))]
            for i, s in enumerate(samples)]
        for group, partial in zip(groups, resume or []):
            if partial is not None:
                group[0].resume(partial)
        return LoopRun(self.llm, groups, progress, on_finish, on_turn)

    def rollout(self, samples: list[Sample], group_size: int, temperature: float = 1.0, top_p: float = 1.0,
                seed: int = 0, progress: bool = False) -> list[list[Trajectory]]:
        """G sampled trajectories per sample; the first turn is prefilled once and forked G ways."""
        run = self.new_rollout(samples, group_size, temperature, top_p, seed, progress=progress)
        self._drive(run)
        return [[reader.traj for reader in group] for group in run.groups]

    def new_rollout(self, samples: list[Sample], group_size: int, temperature: float = 1.0, top_p: float = 1.0,
                    seed: int = 0, indices: list[int] | None = None, progress: bool = False,
                    on_turn: Callable[[Trajectory, TurnRecord], None] | None = None) -> LoopRun:
        """rollout as a run not yet started (see new_run). `indices`: the samples' places in the whole batch (their
        seeds and sample_index), when a batch is split over replicas."""
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        indices = range(len(samples)) if indices is None else indices
        groups = [[Reader(self, s, Trajectory(i, g), TurnSampling(temperature, top_p, mix_seed(seed, i, g)))
                   for g in range(group_size)] for i, s in zip(indices, samples)]
        return LoopRun(self.llm, groups, progress, on_turn=on_turn)

    def _drive(self, run: LoopRun) -> None:
        """Steps the engine until the run is done. If anything raises, the run's requests are aborted and every
        document is closed (its pinned prefix released) before the exception goes on."""
        try:
            run.start()
            while not run.done:
                for output in self.llm.step():
                    run.handle(output)  # False for another client's request on the same engine
        except BaseException as e:
            run.abort(f"aborted: {type(e).__name__} {e}".strip())
            raise
        finally:
            run.close()
