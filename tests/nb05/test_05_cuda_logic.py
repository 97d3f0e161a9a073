"""Notebook 05's CUDA branch, on the CPU: the compiled decode step as compile_decode_step builds it for a GPU
(caches marked as static addresses, no freezing) over the batch sizes of Appendix A's sweep, and the int8
model. Dynamo makes the batch dimension dynamic at the second size, so each model compiles at most twice:
no recompile limit is reached, and every new cache is not a new graph."""

import pytest
import torch
from torch._dynamo.utils import counters


@pytest.fixture
def marked_caches(nb05, monkeypatch):
    """KVCache as it is on CUDA: its tensors marked with mark_static_address(guard=False)."""
    make = nb05.KVCache.__init__

    def marked(self, *args):
        make(self, *args)
        torch._dynamo.mark_static_address(self.k, guard=False)
        torch._dynamo.mark_static_address(self.v, guard=False)

    monkeypatch.setattr(nb05.KVCache, "__init__", marked)


def test_the_cuda_branch_compiles_each_model_at_most_twice_over_batch_sizes(nb05, varied, marked_caches):
    model, cfg = varied
    torch._dynamo.reset()
    counters.clear()
    step = torch.compile(nb05.decode_one_token, fullgraph=True)  # compile_decode_step's CUDA call, less the mode
    for b in [1, 2, 4, 8, 16]:
        prompts = torch.randint(0, cfg["vocab_size"], (b, 6), generator=torch.Generator().manual_seed(b))
        assert torch.equal(nb05.generate(model, prompts, 8, decode_step=step), nb05.generate(model, prompts, 8)), b
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
    graphs = counters["stats"]["unique_graphs"]
    int8 = nb05.quantize_int8(nb05.with_weights_in(model, torch.bfloat16))
    for b in [1, 4, 16]:
        prompts = torch.randint(0, cfg["vocab_size"], (b, 6), generator=torch.Generator().manual_seed(b))
        # bfloat16: the compiled kernels may round differently and part at a near-tie
        nb05.same_greedy_tokens(int8, nb05.generate(int8, prompts, 8, decode_step=step), nb05.generate(int8, prompts, 8))
    assert counters["stats"]["unique_graphs"] - graphs <= 2, dict(counters["stats"])
    torch._dynamo.reset()
