"""The turn format (and the gate prior on its choices) as an engine logits processor.

Per step it costs one gather of mask-table rows, one masked fill, a row write per quote choice and, where a gate
prior is due, one index_put; per sequence and token, the state machine's list look-up and tag check
(turn_format.py).
"""
import torch

from grumem.agent import gate_prior
from grumem.agent.turn_format import ANY, CHECK, POSITIVE, FormatArgs, GateGrammar, GateState
from grumem.engine import LLM, LogitsProcessor, SamplingParams


class TurnFormat(LogitsProcessor):
    name = "grumem.turn_format"

    def __init__(self, tokenizer, device: torch.device | str = "cpu"):
        self.grammar = GateGrammar(tokenizer, device)
        self.blocked = ~self.grammar.mask_table

    @classmethod
    def of(cls, llm: LLM) -> "TurnFormat":
        """The engine's turn-format processor, registered on first use (its tables are built once per engine)."""
        processor = llm.logits_processors.get(cls.name)
        if processor is None:
            processor = cls(llm.tokenizer, llm.device)
            llm.add_logits_processor(processor)
        return processor

    @property
    def mask_table(self) -> torch.Tensor:
        return self.grammar.mask_table

    def new_state(self, args: FormatArgs | dict, params: SamplingParams) -> GateState:
        args = args if isinstance(args, FormatArgs) else FormatArgs(**args)
        if args.evidence_offset is not None and params.prompt_logprobs is None:
            raise ValueError("the gate prior (evidence_offset) needs prompt_logprobs over the question")
        return GateState(self.grammar, args)

    def observe_prompt_logprobs(self, state: GateState, logprobs: list[float]) -> None:
        if state.evidence_offset is not None:
            state.evidence = gate_prior.evidence(logprobs, state.evidence_offset)

    def apply(self, logits: torch.Tensor, states: list[GateState | None]) -> tuple[torch.Tensor, list[int]]:
        masks = [state.next_mask() if state is not None else (ANY, -1) for state in states]
        mask_rows = torch.tensor([row if isinstance(row, int) else ANY for row, _ in masks], device=logits.device)
        blocked = self.blocked[mask_rows]
        for i, (row, _) in enumerate(masks):
            if not isinstance(row, int):  # a quote's choice: the ids that go on copying the section
                blocked[i] = True
                blocked[i, list(row)] = False
        logits = logits.masked_fill(blocked, float("-inf"))
        biases = [(i, *bias) for i, state in enumerate(states) if state is not None and (bias := self._bias(state))]
        if biases:
            rows, cols, values = zip(*biases)
            index = (torch.tensor(rows, device=logits.device), torch.tensor(cols, device=logits.device))
            logits = logits.index_put(index, torch.tensor(values, device=logits.device), accumulate=True)
        return logits, [forced for _, forced in masks]

    def _bias(self, state: GateState) -> tuple[int, float] | None:
        """(token id, added logit) of the gate prior at a gate choice."""
        gate = state.choosing
        if state.evidence is None or gate is None:
            return None
        token_id = self.grammar.options[gate][POSITIVE[gate]][0]
        return token_id, gate_prior.choice_bias(state.evidence, gate, state.gates.get(CHECK))

    def observe(self, state: GateState, token_id: int) -> int:
        return state.observe(token_id)

    def is_finished(self, state: GateState) -> bool:
        return state.done

    def fork(self, state: GateState) -> GateState:
        return state.copy()

    def output(self, state: GateState) -> dict[str, str]:
        return dict(state.gates)
