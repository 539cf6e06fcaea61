"""OpenAI-compatible endpoints: /v1/completions, /v1/chat/completions (both streaming with a final usage chunk) and
/v1/models. A prompt is text or token ids; `return_token_ids` adds the prompt's and each choice's token ids (vLLM's
extension). `logprobs` are those of CompletionOutput.top_logprobs (engine/top_logprobs.py says under which
distribution)."""
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from grumem.engine import CompletionOutput, RequestOutput, SamplingParams
from grumem.serve.http import (BadRequest, ModelNotFound, ServerState, merged, new_id, now, server, sse, sse_stream,
                               unless_disconnected)
from grumem.serve.protocol import ChatCompletionRequest, CompletionRequest, OpenAISampling
from grumem.serve.text import TextOutput

router = APIRouter()
COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the rest of the context


@router.get("/v1/models")
async def models(request: Request):
    s = server(request)
    return {"object": "list", "data": [{"id": s.model_name, "object": "model", "created": now(), "owned_by": "grumem",
                                        "max_model_len": s.llm.max_model_len}]}


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    s = server(request)
    prompts = [s.tokenizer.encode(p) if isinstance(p, str) else p for p in body.prompts()]
    if any(not p for p in prompts):
        raise BadRequest("a prompt is empty")
    job = _Job(s, body, new_id("cmpl"), prompts, chat=False, top_logprobs=body.logprobs,
               max_tokens=body.max_tokens or COMPLETION_MAX_TOKENS)
    return await job.respond(request)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    s = server(request)
    messages = [m.as_template_message() for m in body.messages]
    text = s.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = s.tokenizer.encode(text, add_special_tokens=False)
    max_tokens = body.max_completion_tokens or body.max_tokens or max(1, s.llm.max_model_len - len(prompt))
    job = _Job(s, body, new_id("chatcmpl"), [prompt], chat=True, top_logprobs=body.num_top_logprobs,
               max_tokens=max_tokens)
    return await job.respond(request)


@dataclass
class _Choice:
    text: TextOutput
    output: CompletionOutput | None = None
    finish_reason: str | None = None
    num_cached_tokens: int = 0
    num_streamed_tokens: int = 0
    started: bool = False  # chat streaming: the role was sent

    @property
    def token_ids(self) -> list[int]:
        return self.text.token_ids


@dataclass
class _Job:
    """One completions or chat request: its prompts in the engine, and the choices they produce (n per prompt)."""

    s: ServerState
    body: OpenAISampling
    rid: str
    prompts: list[list[int]]
    chat: bool
    top_logprobs: int | None
    max_tokens: int
    choices: dict[int, _Choice] = field(default_factory=dict)

    def __post_init__(self):
        if self.body.model is not None and self.body.model != self.s.model_name:
            raise ModelNotFound(f"the model {self.body.model!r} does not exist; this server serves "
                                f"{self.s.model_name!r}")
        stop = self.body.stop_strings
        self.choices = {k: _Choice(TextOutput(self.s.tokenizer, stop)) for k in range(len(self.prompts) * self.body.n)}

    async def respond(self, request: Request):
        body = self.body
        params = SamplingParams(temperature=body.temperature, top_p=body.top_p, max_tokens=self.max_tokens,
                                seed=body.seed, n=body.n, logprobs=self.top_logprobs)
        streams = self.s.loop.generate(self.rid, self.prompts, params, watch=body.stream or bool(body.stop_strings))
        for stream in streams:
            final, output = await stream.next()
            if final:
                raise BadRequest(output.error)
        if body.stream:
            return StreamingResponse(sse_stream(self._events(streams), lambda: self.s.loop.abort(self.rid, streams[0])),
                                     media_type="text/event-stream")
        await unless_disconnected(request, self._collect(streams), lambda: self.s.loop.abort(self.rid, streams[0]))
        return self._response()

    async def _collect(self, streams) -> None:
        async for prompt_index, final, output in merged(streams):
            self._update(prompt_index, final, output)

    def _update(self, prompt_index: int, final: bool, output: RequestOutput) -> list[int]:
        """Takes a partial or final output of one prompt; returns the choices it changed."""
        if final and output.error:
            raise RuntimeError(output.error)
        changed = []
        for completion in output.outputs:
            k = prompt_index * self.body.n + completion.index
            choice = self.choices[k]
            if choice.finish_reason is not None:
                continue
            choice.text.update(completion.token_ids)
            choice.output, choice.num_cached_tokens = completion, output.num_cached_tokens
            if choice.text.stopped or completion.finish_reason is not None or final:
                choice.finish_reason = "stop" if choice.text.stopped else completion.finish_reason or "abort"
            changed.append(k)
        if final:  # aborted before its prompt forked: the other samples never started
            for k in self._choices_of(prompt_index):
                if self.choices[k].finish_reason is None:
                    self.choices[k].finish_reason = "abort"
                    changed.append(k)
        elif self._prompt_done(prompt_index):
            self.s.loop.abort_prompt(self.rid, prompt_index)  # every choice ended: some by a stop string
        return changed

    def _choices_of(self, prompt_index: int) -> range:
        n = self.body.n
        return range(prompt_index * n, (prompt_index + 1) * n)

    def _prompt_done(self, prompt_index: int) -> bool:
        return all(self.choices[k].finish_reason is not None for k in self._choices_of(prompt_index))

    # --- responses ------------------------------------------------------------------------------------------
    def _response(self) -> dict:
        choices = []
        for k, choice in self.choices.items():
            text = choice.text.text
            entry = {"index": k, "finish_reason": choice.finish_reason,
                     "logprobs": self._logprobs(choice, 0, len(choice.token_ids))}
            if self.chat:
                entry["message"] = {"role": "assistant", "content": text}
            else:
                entry["text"] = text
            if self.body.return_token_ids:
                entry.update(prompt_token_ids=self.prompts[k // self.body.n], token_ids=choice.token_ids)
            choices.append(entry)
        return {"id": self.rid, "object": "chat.completion" if self.chat else "text_completion", "created": now(),
                "model": self.s.model_name, "choices": choices, "usage": self._usage()}

    def _usage(self) -> dict:
        prompt_tokens = sum(map(len, self.prompts))
        completion_tokens = sum(len(c.token_ids) for c in self.choices.values())
        cached = sum(c.num_cached_tokens for k, c in self.choices.items() if k % self.body.n == 0)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens, "prompt_tokens_details": {"cached_tokens": cached}}

    def _logprobs(self, choice: _Choice, start: int, end: int) -> dict | None:
        if self.top_logprobs is None or choice.output is None:
            return None
        decode = self.s.tokenizer.decode
        ids = choice.token_ids[start:end]
        tops = choice.output.top_logprobs[start:end]
        if self.chat:
            def item(token_id, logprob):
                token = decode([token_id])
                return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

            return {"content": [{**item(t, top[t]), "top_logprobs": [item(i, lp) for i, lp in
                                                                     _ranked(top, self.top_logprobs)]}
                                for t, top in zip(ids, tops)]}
        offset = len(decode(choice.token_ids[:start], skip_special_tokens=True)) if start else 0
        offsets = []
        for t in ids:
            offsets.append(offset)
            offset += len(decode([t], skip_special_tokens=True))
        return {"tokens": [decode([t]) for t in ids], "token_logprobs": [top[t] for t, top in zip(ids, tops)],
                "top_logprobs": [{decode([i]): lp for i, lp in _ranked(top, self.top_logprobs)} for top in tops],
                "text_offset": offsets}

    async def _events(self, streams):
        async for prompt_index, final, output in merged(streams):
            for k in self._update(prompt_index, final, output):
                chunk = self._chunk(k)
                if chunk is not None:
                    yield sse(chunk)
        if self.body.include_usage:
            yield sse({**self._chunk_head(), "choices": [], "usage": self._usage()})

    def _chunk_head(self) -> dict:
        return {"id": self.rid, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": now(), "model": self.s.model_name}

    def _chunk(self, k: int) -> dict | None:
        choice = self.choices[k]
        done = choice.finish_reason is not None
        text = choice.text.delta(final=done)
        start, end = choice.num_streamed_tokens, len(choice.token_ids)
        if not text and not done and start == end:
            return None
        choice.num_streamed_tokens = end
        entry = {"index": k, "logprobs": self._logprobs(choice, start, end), "finish_reason": choice.finish_reason}
        if self.chat:
            entry["delta"] = {"content": text} if choice.started else {"role": "assistant", "content": text}
            choice.started = True
        else:
            entry["text"] = text
        if self.body.return_token_ids:
            entry["token_ids"] = choice.token_ids[start:end]
        return {**self._chunk_head(), "choices": [entry]}


def _ranked(top: dict[int, float], k: int) -> list[tuple[int, float]]:
    return sorted(top.items(), key=lambda item: -item[1])[:k]
