"""The gate prior: evidence read off the model itself, for models whose gates are not trained (the one place that
explains it; the README and the settings point here).

An untrained model's <check> choice carries no signal (SmolLM2-135M: AUC about 0.5 on needle vs haystack chunks). Its
question likelihood does: in the chunk_first layout the question follows the section, and
    evidence = log P(question | section) - log P(question | empty section) - threshold
is a log-likelihood ratio (in nats) of "this section holds the answer", minus a threshold (10 nats by default,
calibrated on seed-0 samples of NIAH single 2/3 and HotpotQA). The engine returns the question's logprobs from the
memory turn's own prefill (SamplingParams.prompt_logprobs); the baseline comes from one request per document with an
empty section. The evidence is added to the logit of <check>yes and of <next>end; after <check>no its negative
magnitude goes to <next>end (an unchanged memory is no reason to stop). The gates are still sampled from the model's
distribution, with their tags, roles and logprobs as before. It needs the question after the section (chunk_first)
and gate choices to bias (a turn-format constraint); gate_prior_threshold=None turns it off.
"""
from grumem.agent.turn_format import CHECK, NEXT


def evidence_offset(baseline_logprobs: list[float], threshold: float) -> float:
    """What the memory turns' question logprob sum is compared with: the empty-section baseline plus the threshold."""
    return sum(baseline_logprobs) + threshold


def evidence(question_logprobs: list[float], offset: float) -> float:
    return sum(question_logprobs) - offset


def choice_bias(evidence_value: float, gate: str, check: str | None) -> float:
    """The logit added to the gate's positive option (check: yes, next: end)."""
    assert gate in (CHECK, NEXT)
    if gate == NEXT and check == "no":
        return -abs(evidence_value)  # the memory did not change: nothing new to end on
    return evidence_value
