"""POST /generate in SGLang's shape, for RL clients: token ids in; output ids, each token's logprob under the
distribution it was sampled from (the engine's, what a policy-gradient ratio needs), its role (sampled, a constrained
choice, or forced by the gate constraint), the finish reason and the prompt tokens served from the prefix cache."""
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from grumem.agent import FormatArgs, TurnFormat
from grumem.engine import RequestOutput, SamplingParams
from grumem.serve.http import BadRequest, ServerState, new_id, server, sse, sse_stream, unless_disconnected
from grumem.serve.protocol import GenerateRequest

router = APIRouter()


@router.post("/generate")
async def generate(body: GenerateRequest, request: Request):
    s = server(request)
    ids = body.input_ids if body.input_ids is not None else s.tokenizer.encode(body.text)
    rid = body.rid or new_id("gen")
    (stream,) = s.loop.generate(rid, [ids], _params(body), watch=body.stream)
    final, output = await stream.next()
    if final:
        raise BadRequest(output.error)
    if body.stream:
        return StreamingResponse(sse_stream(_events(s, body, rid, stream), lambda: s.loop.abort(rid, stream)),
                                 media_type="text/event-stream")
    output = await unless_disconnected(request, stream.final(), lambda: s.loop.abort(rid, stream))
    return _response(s, body, rid, output)


def _params(body: GenerateRequest) -> SamplingParams:
    p = body.sampling_params
    processors = {}
    if p.gate_constraint is not None:
        constraint = p.gate_constraint.model_dump()
        quote = constraint.pop("quote")
        processors[TurnFormat.name] = FormatArgs(**constraint, quote=None if quote is None else tuple(quote))
    return SamplingParams(temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_new_tokens, n=p.n, seed=p.seed,
                          stop_token_ids=tuple(p.stop_token_ids), ignore_eos=p.ignore_eos,
                          logits_processors=processors)


async def _events(s: ServerState, body: GenerateRequest, rid: str, stream):
    async for final, output in stream.events():
        yield sse(_response(s, body, rid, output, final))


def _response(s: ServerState, body: GenerateRequest, rid: str, output: RequestOutput, final: bool = True):
    if final and output.error:
        raise RuntimeError(output.error)
    results = []
    for completion in output.outputs:
        meta = {"id": rid, "finish_reason": {"type": completion.finish_reason} if final else None,
                "prompt_tokens": len(output.prompt_token_ids), "completion_tokens": len(completion.token_ids),
                "cached_tokens": output.num_cached_tokens, "token_roles": completion.roles,
                "weight_version": s.loop.weight_version}
        if TurnFormat.name in completion.extra:
            meta["gates"] = completion.extra[TurnFormat.name]
        if body.return_logprob:
            meta["output_token_logprobs"] = [[lp, t, None] for lp, t in zip(completion.logprobs, completion.token_ids)]
        results.append({"text": s.tokenizer.decode(completion.token_ids, skip_special_tokens=True),
                        "output_ids": completion.token_ids, "meta_info": meta})
    return results[0] if body.sampling_params.n == 1 else results
