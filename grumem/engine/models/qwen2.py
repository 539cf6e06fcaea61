"""The Qwen2 / Qwen2.5 decoder family: Llama with biases on the q, k, v projections and none on o_proj."""
from transformers import PretrainedConfig

from grumem.engine.models.llama import LlamaForCausalLM


class Qwen2ForCausalLM(LlamaForCausalLM):
    @staticmethod
    def attention_biases(config: PretrainedConfig) -> tuple[bool, bool]:
        return True, False
