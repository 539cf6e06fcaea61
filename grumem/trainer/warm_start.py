"""The warm start: supervised training of the model's own gates (and its quotes, memories and boxed answers) on
turns labelled from the training documents' evidence spans (labelled_turns.py), so that RL starts from gates that
say yes and end at all. The loss is the mean negative logprob of the free tokens plus `gate_weight` times that of
the gate choices, taken under the turn format's masks as the engine samples. After each step the engine serves the
new weights (`LLM.update_weights`), so evaluations and rollouts use exactly what was trained.
"""
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from grumem.agent import AgentConfig, MemoryAgent, TurnFormat
from grumem.agent.turn_format import CHECK_CHOICE, NEXT_CHOICE
from grumem.engine import LLM, SamplingParams, TokenRole
from grumem.tasks import Sample
from grumem.trainer.labelled_turns import AmbiguousLabel, labelled_rows
from grumem.trainer.policy import Policy
from grumem.trainer.rows import TrainingRow


THINKS = ("labelled", "own")
MAX_SKIPPED_IN_A_ROW = 50


@dataclass(slots=True)
class WarmStartConfig:
    documents_per_step: int = 4
    lr: float = 2e-4  # LoRA; full fine-tuning wants about 1e-5
    gate_weight: float = 4.0  # the two gate choices of a turn against its ~40 free tokens
    after_exit: float = 0.25  # share of documents that also get a turn after their last evidence (no, end)
    prompt_grad: bool = False  # gradients through the prompts too (exact, about 3x the cost per row)
    thinks: str = "labelled"  # "labelled": quotes written from the labels; "own": the model's own (greedy, no loss)
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.documents_per_step < 1 or self.lr <= 0 or self.gate_weight < 0 or not 0 <= self.after_exit <= 1:
            raise ValueError("need documents_per_step >= 1, lr > 0, gate_weight >= 0 and 0 <= after_exit <= 1")
        if self.thinks not in THINKS:
            raise ValueError(f"thinks must be one of {THINKS}, got {self.thinks!r}")


class WarmStart:
    def __init__(self, llm: LLM, policy: Policy, agent_config: AgentConfig, config: WarmStartConfig | None = None):
        if agent_config.uses_gate_prior:
            raise ValueError("the warm start trains the model's own gates: turn the gate prior off")
        self.llm, self.policy, self.agent_config = llm, policy, agent_config
        self.config = config or WarmStartConfig()
        self.agent = MemoryAgent(llm, agent_config)
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=self.config.lr, weight_decay=0.0)
        self.rng = random.Random(self.config.seed)
        self.num_steps, self.skipped = 0, 0

    def sync_engine(self) -> None:
        self.policy.push_to(self.llm)

    def rows(self, samples: Iterator[Sample]) -> list[TrainingRow]:
        """The labelled rows of the next documents_per_step documents whose labels are unambiguous."""
        rows, documents, in_a_row = [], 0, 0
        grammar, prompts = self.agent.turn_format.grammar, self.agent.prompts
        while documents < self.config.documents_per_step:
            sample = next(samples)
            try:
                rows += labelled_rows(sample, self.agent_config, prompts, grammar,
                                      after_exit=self.rng.random() < self.config.after_exit,
                                      thinks=self.own_thinks if self.config.thinks == "own" else None)
                documents, in_a_row = documents + 1, 0
            except AmbiguousLabel as e:
                self.skipped, in_a_row = self.skipped + 1, in_a_row + 1
                if in_a_row >= MAX_SKIPPED_IN_A_ROW:
                    raise ValueError(f"{in_a_row} documents in a row had no single label ({e}): "
                                     "raise the chunk size") from e
        return rows

    def own_thinks(self, prompts: list[list[int]]) -> list[list[int]]:
        """The thought the served model writes (greedy, under the turn format) after each prompt, up to where the
        format closes it."""
        memory_format = self.agent_config.memory_format
        opening = len(self.agent.turn_format.grammar.tag_ids("<think>"))
        params = SamplingParams(temperature=0, max_tokens=opening + (memory_format.max_think_tokens or 256) + 1,
                                logits_processors={TurnFormat.name: memory_format})
        thinks = []
        for output in self.llm.generate(prompts, params):
            if output.error is not None:
                raise ValueError(output.error)
            roles, ids = output.outputs[0].roles, output.outputs[0].token_ids
            end = opening
            while end < len(ids) and roles[end] != TokenRole.FORCED:
                end += 1
            thinks.append(ids[opening:end])
        return thinks

    def step(self, samples: Iterator[Sample]) -> dict:
        start = time.perf_counter()
        rows = self.rows(samples)
        self.optimizer.zero_grad(set_to_none=True)
        stats = self.backward(rows)
        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(),
                                                                  self.config.max_grad_norm))
        self.optimizer.step()
        self.sync_engine()
        self.num_steps += 1
        return {"step": self.num_steps, **stats, "rows": len(rows), "row_tokens": sum(r.num_tokens for r in rows),
                "seconds": time.perf_counter() - start}

    def backward(self, rows: list[TrainingRow]) -> dict:
        """Backward of the step's loss, row by row (its memory stays that of one row); returns its metrics."""
        num_free = sum(1 for r in rows for j in r.loss_positions if not _is_gate(r, j))
        num_gates = sum(1 for r in rows for j in r.loss_positions if _is_gate(r, j))
        totals = {"loss": 0.0, "text_nll": 0.0, "gate_nll": 0.0, "gate_acc": 0.0}
        for row in rows:
            logprobs = self.policy.token_logprobs([row], 1.0, self.agent.turn_format.mask_table,
                                                  prompt_grad=self.config.prompt_grad)
            gates = torch.tensor([_is_gate(row, j) for j in row.loss_positions], device=logprobs.device)
            text_nll, gate_nll = -logprobs[~gates].sum(), -logprobs[gates].sum()
            loss = text_nll / max(num_free, 1) + self.config.gate_weight * gate_nll / max(num_gates, 1)
            loss.backward()
            totals["loss"] += float(loss.detach())
            totals["text_nll"] += float(text_nll.detach()) / max(num_free, 1)
            totals["gate_nll"] += float(gate_nll.detach()) / max(num_gates, 1)
            totals["gate_acc"] += float((logprobs[gates].detach() > math.log(0.5)).sum()) / max(num_gates, 1)
        return totals


def _is_gate(row: TrainingRow, j: int) -> bool:
    return row.mask_rows is not None and row.mask_rows[j] in (CHECK_CHOICE, NEXT_CHOICE)
