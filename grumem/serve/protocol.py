"""Request bodies of the server's endpoints (pydantic): OpenAI's completions and chat, SGLang's /generate, and the
memory loop's /v1/memory. Fields the server does not implement are rejected by name rather than ignored, except,
on the OpenAI endpoints, those common clients send that change nothing here (IGNORED, INACTIVE) and fields sent as
null (their default applies)."""
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from grumem.engine.sampling_params import MAX_TOP_LOGPROBS


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# what OpenAI clients send that changes nothing here: labels, and features at their inactive value
IGNORED = {"user", "store", "metadata", "service_tier", "parallel_tool_calls"}
INACTIVE = {"logit_bias": {}, "tools": [], "tool_choice": "none", "response_format": {"type": "text"}}


class StreamOptions(Body):
    model_config = ConfigDict(extra="ignore")  # include_obfuscation and the like
    include_usage: bool = False


class OpenAISampling(Body):
    """What completions and chat share."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=64)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    return_token_ids: bool = False  # vLLM's extension: prompt and output token ids in the response
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _defaults_for_nulls(cls, data):
        if not isinstance(data, dict):
            return data
        return {k: v for k, v in data.items() if v is not None and k not in IGNORED and INACTIVE.get(k, ()) != v}

    @model_validator(mode="after")
    def _supported(self):
        if self.frequency_penalty or self.presence_penalty:
            raise ValueError("frequency_penalty and presence_penalty are not supported (only 0)")
        if isinstance(self.stop, list) and not all(self.stop):
            raise ValueError("stop strings must be non-empty")
        return self

    @property
    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) and self.stop else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(OpenAISampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False

    @model_validator(mode="after")
    def _no_echo(self):
        if self.echo:
            raise ValueError("echo is not supported")
        return self

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        prompt = self.prompt
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            return [prompt]
        if not prompt:
            raise ValueError("prompt is empty")
        return list(prompt)


class ChatMessage(Body):
    model_config = ConfigDict(extra="allow")  # name, tool fields: passed to the chat template as they are
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def as_template_message(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):
            if any(part.get("type") != "text" for part in content):
                raise ValueError("only text content parts are supported")
            content = "".join(part.get("text", "") for part in content)
        return {**(self.model_extra or {}), "role": "system" if self.role == "developer" else self.role,
                "content": content or ""}


class ChatCompletionRequest(OpenAISampling):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    max_completion_tokens: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _top_needs_logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    @property
    def num_top_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class GateConstraint(Body):
    """The GRU-Mem turn format (agent/turn_format.py FormatArgs) as a constraint on /generate."""

    mode: Literal["format", "gates"] = "format"
    max_think_tokens: int | None = Field(None, ge=1)
    max_memory_tokens: int | None = Field(None, ge=1)
    max_think_lines: int | None = Field(None, ge=1)
    quote: list[int] | None = Field(None, description="the section the thought copies one sentence of (format mode)")


class GenerateSampling(Body):
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=64)
    seed: int | None = None
    stop_token_ids: list[int] = []
    ignore_eos: bool = False
    gate_constraint: GateConstraint | None = None


class GenerateRequest(Body):
    """SGLang's /generate: token ids (or text) in, token ids, logprobs and token roles out."""

    input_ids: list[int] | None = None
    text: str | None = None
    sampling_params: GenerateSampling = GenerateSampling()
    rid: str | None = None
    return_logprob: bool = False
    stream: bool = False

    @model_validator(mode="after")
    def _one_input(self):
        if (self.input_ids is None) == (self.text is None):
            raise ValueError("give exactly one of input_ids or text")
        return self


class MemoryRequest(Body):
    """One document and its question through the memory loop. The loop settings are AgentConfig's fields (those
    not given keep its defaults); `gates`: "prior" (the gate prior, chunk_first layout) or "own" (paper layout)."""

    document: str | None = None
    document_ids: list[int] | None = None
    question: str
    answers: list[str] | str | None = None
    gates: Literal["prior", "own"] = "prior"
    mode: Literal["grumem", "memagent"] | None = None
    exit_gate: bool | None = None
    layout: Literal["paper", "chunk_first"] | None = None
    chunk_tokens: int | None = None
    memory_tokens: int | None = None
    max_think_tokens: int | None = None
    max_think_lines: int | None = None
    answer_tokens: int | None = None
    constraint: Literal["format", "gates"] | None = None
    think: Literal["free", "quote"] | None = None
    gate_prior_threshold: float | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stream: bool = False
    rid: str | None = None

    @model_validator(mode="after")
    def _one_document(self):
        if (self.document is None) == (self.document_ids is None):
            raise ValueError("give exactly one of document (text) or document_ids")
        return self

    def loop_settings(self) -> dict[str, Any]:
        """The AgentConfig fields this request sets."""
        settings = {name: getattr(self, name) for name in self.model_fields_set & LOOP_FIELDS}
        if self.gates == "own":
            settings["gate_prior_threshold"] = None
            settings.setdefault("layout", "paper")
        return settings


LOOP_FIELDS = {"mode", "exit_gate", "layout", "chunk_tokens", "memory_tokens", "max_think_tokens", "max_think_lines",
               "answer_tokens", "constraint", "think", "gate_prior_threshold", "temperature", "top_p", "seed"}


class UpdateWeightsRequest(Body):
    model_path: str


class AbortRequest(Body):
    rid: str | None = None
    abort_all: bool = False

    @model_validator(mode="after")
    def _one_target(self):
        if (self.rid is None) == (not self.abort_all):
            raise ValueError("give a rid or abort_all: true")
        return self
