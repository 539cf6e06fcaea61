"""RL control (on with `grumem serve --enable-control`), in SGLang's shape: abort one request or all (their callers
get the partial outputs, finish_reason "abort"), pause and continue generation, load new weights from a folder
(the weight version goes up; every response carries it), flush the prefix cache."""
from fastapi import APIRouter, Request

from grumem.serve.http import error_response, server
from grumem.serve.protocol import AbortRequest, UpdateWeightsRequest

router = APIRouter()


@router.post("/abort_request")
async def abort_request(body: AbortRequest, request: Request):
    aborted = await server(request).loop.abort(None if body.abort_all else body.rid)
    return {"aborted": aborted}


@router.post("/pause_generation")
async def pause_generation(request: Request):
    return await _set_paused(request, True)


@router.post("/continue_generation")
async def continue_generation(request: Request):
    return await _set_paused(request, False)


async def _set_paused(request: Request, paused: bool):
    loop = server(request).loop

    def set_paused():
        loop.paused = paused

    await loop.call(set_paused)
    return {"paused": paused}


@router.post("/update_weights_from_disk")
async def update_weights_from_disk(body: UpdateWeightsRequest, request: Request):
    loop = server(request).loop

    def update():
        if loop.llm.has_unfinished_requests():
            return False
        loop.llm.load_weights(body.model_path)
        loop.weight_version += 1
        return True

    if not await loop.call(update):
        return error_response(409, "requests are in flight: abort them (/abort_request) or let them finish first",
                              "conflict")
    return {"success": True, "weight_version": loop.weight_version}


@router.post("/flush_cache")
async def flush_cache(request: Request):
    loop = server(request).loop
    await loop.call(loop.llm.reset_prefix_cache)
    return {"success": True}
