"""POST /v1/memory: one document and its question through the memory loop, in the engine's shared batch.

Returns the answer and the per-turn trace (gates, the memory after each turn as ids and text, tokens prefilled /
served from the prefix cache / decoded, seconds); with `stream: true`, one server-sent event per turn and the
result last. A client that disconnects cancels the whole loop (its requests are aborted, its pins released).
"""
import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from grumem.agent import AgentConfig, MemoryAgent, Trajectory, TurnRecord
from grumem.serve.http import BadRequest, ServerState, new_id, server, sse, sse_stream, unless_disconnected
from grumem.serve.protocol import MemoryRequest
from grumem.tasks import Sample
from grumem.tasks.user_documents import token_sample, user_sample

router = APIRouter()


@router.post("/v1/memory")
async def memory(body: MemoryRequest, request: Request):
    s = server(request)
    config = AgentConfig(**body.loop_settings())
    sample = await asyncio.to_thread(_sample, s, body)  # a long document tokenises off the event loop
    rid = body.rid or new_id("mem")
    stream = s.loop.memory(rid, lambda on_turn: _new_run(s, config, sample, on_turn))
    final, payload = await stream.next()
    if final:
        raise payload  # rejected: a ValueError is a 400
    if body.stream:
        return StreamingResponse(sse_stream(_events(s, rid, stream), lambda: s.loop.abort(rid, stream)),
                                 media_type="text/event-stream")
    payload = await unless_disconnected(request, stream.final(), lambda: s.loop.abort(rid, stream))
    return _result(s, rid, payload)


def _new_run(s: ServerState, config: AgentConfig, sample: Sample, on_turn):
    """On the engine thread: the document's run, or a ValueError when it cannot be read (an empty document, a
    question longer than a chunk)."""
    run = _agent(s, config).new_run([sample], on_turn=on_turn)
    problem = run.groups[0][0].problem()
    if problem is not None:
        raise ValueError(problem)
    return run


def _sample(s: ServerState, body: MemoryRequest) -> Sample:
    if body.document is not None:
        return user_sample(s.tokenizer, body.document, body.question, body.answers)
    vocab = s.llm.vocab_size
    bad = next((t for t in body.document_ids if not 0 <= t < vocab), None)
    if bad is not None:
        raise BadRequest(f"document token id {bad} is outside the vocabulary [0, {vocab})")
    return token_sample(body.document_ids, body.question, body.answers)


def _agent(s: ServerState, config: AgentConfig) -> MemoryAgent:
    """One agent per loop setting (its prompt pieces are built once); called on the engine thread."""
    key = repr(config)
    agent = s.agents.get(key)
    if agent is None:
        agent = s.agents[key] = MemoryAgent(s.llm, config)
    return agent


async def _events(s: ServerState, rid: str, stream):
    async for final, payload in stream.events():
        if final:
            yield sse({"result": _result(s, rid, payload)})
        else:
            _, trajectory, record = payload
            yield sse({"turn": _turn(s, record)})


def _result(s: ServerState, rid: str, payload) -> dict:
    if isinstance(payload, Exception):
        raise payload
    trajectory: Trajectory = payload[0][0]
    turns = [_turn(s, t) for t in trajectory.turns]
    result = {"id": rid, "answer": trajectory.answer, "boxed": trajectory.boxed, "error": trajectory.error,
              "aborted": trajectory.aborted, "chunks": trajectory.num_chunks, "stop_chunk": trajectory.stop_chunk,
              "seconds": round(trajectory.seconds, 4), "turns": turns,
              "usage": {name: sum(t[name] for t in turns) for name in ("prefilled", "cached", "decoded")},
              "weight_version": s.loop.weight_version}
    if trajectory.score is not None:
        result.update(score=trajectory.score, correct=trajectory.score >= 1.0)
    return result


def _turn(s: ServerState, t: TurnRecord) -> dict:
    turn = {"kind": t.kind, "chunk": t.chunk_index, "finish_reason": t.finish_reason,
            "prefilled": len(t.prompt_ids) - t.num_cached_tokens, "cached": t.num_cached_tokens,
            "decoded": len(t.output_ids), "seconds": round(t.seconds, 4)}
    if t.kind == "memory":
        turn.update(check=t.check, next=t.next, well_formed=t.well_formed, gate_prior=t.gate_prior,
                    memory_ids=t.memory_ids, memory=s.tokenizer.decode(t.memory_ids, skip_special_tokens=True))
    else:
        turn["text"] = s.tokenizer.decode(t.output_ids, skip_special_tokens=True)
    return turn
