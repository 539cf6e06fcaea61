"""Token embedding and the LM head (tied to the embedding or its own weight)."""
import torch
import torch.nn.functional as F
from torch import nn

from grumem.engine.layers.prepacked import PrepackedWeight


class VocabEmbedding(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight)


class LMHead(PrepackedWeight, VocabEmbedding):
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.forward_linear(hidden_states)
