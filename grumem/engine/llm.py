"""The user-facing engine: `LLM(model, **config)`, `generate`, and the request-level `add_request` / `step`."""
from grumem.engine.llm_engine import LLMEngine


class LLM(LLMEngine):
    pass
