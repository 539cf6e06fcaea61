"""The warm start: supervised training of the model's own gates (and its quotes, memories and boxed answers) on
turns labelled from the training documents' evidence spans (labelled_turns.py), so that RL starts from gates that
say yes and end at all. The loss is the mean negative logprob of the free tokens plus `gate_weight` times that of
the choices: the two gates and, with quoted thoughts, where the quote copies from (one token of ~40 that decides
which sentence the gates judge), taken under the turn format's masks as the engine samples. After each step the engine serves the
new weights (`LLM.update_weights`), so evaluations and rollouts use exactly what was trained.
"""
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from grumem.agent import AgentConfig, MemoryAgent, TurnFormat
from grumem.agent.turn_format import CHECK_CHOICE, NEXT_CHOICE, thought_ids
from grumem.engine import LLM, SamplingParams
from grumem.tasks import Sample
from grumem.trainer.labelled_turns import AmbiguousLabel, TurnLabel, labelled_rows
from grumem.trainer.policy import Policy
from grumem.trainer.rows import TrainingRow


THINKS = ("labelled", "own")
MAX_SKIPPED_IN_A_ROW = 50


@dataclass(slots=True)
class WarmStartConfig:
    documents_per_step: int = 4
    lr: float = 2e-4  # LoRA; full fine-tuning wants about 1e-5
    gate_weight: float = 4.0  # a turn's choices (two gates, a quote's start) against its ~40 free tokens
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

    def own_thinks(self, labels: list[TurnLabel]) -> list[list[int]]:
        """The thought the served model writes (greedy, under each turn's format) after each label's prompt, up to
        where the format closes it."""
        grammar, cap = self.agent.turn_format.grammar, self.agent_config.max_think_tokens
        max_tokens = len(grammar.tag_ids("<think>")) + cap + len(grammar.newline_ids)
        params = [SamplingParams(temperature=0, max_tokens=max_tokens,
                                 logits_processors={TurnFormat.name: label.format_args}) for label in labels]
        thinks = []
        for label, output in zip(labels, self.llm.generate([label.prompt_ids for label in labels], params)):
            if output.error is not None:
                raise ValueError(output.error)
            thinks.append(thought_ids(grammar, label.format_args, output.outputs[0].token_ids))
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
        """Backward of the step's loss, row by row (its memory stays that of one row); returns its metrics: the
        text's and the gates' mean nll, and the share of gate and quote choices given more than even odds."""
        kinds = [[_kind(r, j) for j in r.loss_positions] for r in rows]
        count = {kind: max(sum(k == kind for row in kinds for k in row), 1) for kind in (TEXT, GATE, QUOTE)}
        totals = {"loss": 0.0, "text_nll": 0.0, "gate_nll": 0.0, "gate_acc": 0.0, "quote_acc": 0.0}
        for row, row_kinds in zip(rows, kinds):
            logprobs = self.policy.token_logprobs([row], 1.0, self.agent.turn_format.mask_table,
                                                  prompt_grad=self.config.prompt_grad)
            nll = {kind: -logprobs[[k == kind for k in row_kinds]] for kind in (TEXT, GATE, QUOTE)}
            loss = (nll[TEXT].sum() / count[TEXT]
                    + self.config.gate_weight * (nll[GATE].sum() + nll[QUOTE].sum()) / (count[GATE] + count[QUOTE]))
            loss.backward()
            nll = {kind: values.detach() for kind, values in nll.items()}
            totals["loss"] += float(loss.detach())
            totals["text_nll"] += float(nll[TEXT].sum()) / count[TEXT]
            totals["gate_nll"] += float(nll[GATE].sum()) / count[GATE]
            totals["gate_acc"] += float((nll[GATE] < math.log(2)).sum()) / count[GATE]
            totals["quote_acc"] += float((nll[QUOTE] < math.log(2)).sum()) / count[QUOTE]
        if not any(QUOTE in row_kinds for row_kinds in kinds):
            totals["quote_acc"] = None  # free thoughts
        return totals


TEXT, GATE, QUOTE = "text", "gate", "quote"


def _kind(row: TrainingRow, j: int) -> str:
    """What output token j of a row is: a gate's value, a quote's choice of where to copy from (its mask row is the
    allowed ids), or text."""
    row_mask = row.mask_rows[j] if row.mask_rows is not None else None
    if isinstance(row_mask, tuple):
        return QUOTE
    return GATE if row_mask in (CHECK_CHOICE, NEXT_CHOICE) else TEXT
