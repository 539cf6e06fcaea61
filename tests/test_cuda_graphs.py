"""CUDA graphs for decode: bucket sizes (anywhere), and on a GPU the same tokens and logprobs as eager decode."""
import pytest
import torch

from grumem.engine import LLM, SamplingParams
from grumem.engine.cuda_graphs import batch_buckets

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@pytest.mark.parametrize("max_num_seqs, buckets", [
    (1, [1]), (5, [1, 2, 4, 5]), (16, [1, 2, 4, 8, 16]), (40, [1, 2, 4, 8, 16, 32, 40]),
    (64, [1, 2, 4, 8, 16, 32, 48, 64]),
])
def test_batch_buckets(max_num_seqs, buckets):
    assert batch_buckets(max_num_seqs) == buckets


@requires_cuda
@pytest.mark.parametrize("batch", [1, 3, 16, 20])  # 3 and 20 run padded in the 4 and 32 buckets
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_graph_decode_equals_eager(tiny_llama_path, batch, temperature):
    g = torch.Generator().manual_seed(batch)
    lens = torch.randint(5, 90, (batch,), generator=g).tolist()
    prompts = [torch.randint(0, 49152, (n,), generator=g).tolist() for n in lens]
    params = SamplingParams(temperature=temperature, seed=7, max_tokens=24, ignore_eos=True)
    outputs = {}
    for eager in (True, False):
        llm = LLM(tiny_llama_path, device="cuda", max_num_seqs=32, max_model_len=512, enforce_eager=eager)
        assert (llm.model_runner.decode_graphs is None) == eager
        outputs[eager] = [o.outputs[0] for o in llm.generate(prompts, params)]
    for graph, eager in zip(outputs[False], outputs[True]):
        assert graph.token_ids == eager.token_ids
        torch.testing.assert_close(torch.tensor(graph.logprobs), torch.tensor(eager.logprobs), atol=1e-4, rtol=1e-4)
