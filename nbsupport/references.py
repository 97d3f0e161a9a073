"""Meta's own Llama code as an independent reference for the notebooks' models.

`meta_llama_module()` imports `llama_models.llama3.model` (Meta's reference implementation, from the
`llama-models` package). That file imports fairscale's model-parallel layers; on one process they are
plain nn.Linear / nn.Embedding, so we provide those under fairscale's names for the import instead of
installing fairscale. With `rope_theta=10000`, no RoPE scaling and as many key/value heads as heads,
Meta's Llama 3 code computes the Llama 2 architecture. Meta's `llama/model.py` of the Llama 2 repository
has grouped-query attention too (`n_kv_heads`, `repeat_kv`, for 70B); what differs is the RoPE base
(`rope_theta`, 10,000 for Llama 2) and Llama 3.1's RoPE scaling.
"""

import importlib
import sys
import types

import torch
from torch import nn

_MODULE = "llama_models.llama3.model"
_FAIRSCALE = ("fairscale", "fairscale.nn", "fairscale.nn.model_parallel",
              "fairscale.nn.model_parallel.layers", "fairscale.nn.model_parallel.initialize")


class _ParallelLinear(nn.Linear):
    def __init__(self, in_features, out_features, bias=True, **_parallel_options):
        super().__init__(in_features, out_features, bias=bias)


class _ParallelEmbedding(nn.Embedding):
    def __init__(self, num_embeddings, embedding_dim, **_parallel_options):
        super().__init__(num_embeddings, embedding_dim)


def meta_llama_module():
    """Meta's `llama_models.llama3.model`, imported with single-process stand-ins for fairscale's layers
    (the stand-ins are in sys.modules only during the import)."""
    if _MODULE in sys.modules:
        return sys.modules[_MODULE]
    layers = types.ModuleType("fairscale.nn.model_parallel.layers")
    layers.ColumnParallelLinear = layers.RowParallelLinear = _ParallelLinear
    layers.VocabParallelEmbedding = _ParallelEmbedding
    initialize = types.ModuleType("fairscale.nn.model_parallel.initialize")
    initialize.get_model_parallel_world_size = lambda: 1
    fakes = {name: types.ModuleType(name) for name in _FAIRSCALE[:3]}
    fakes |= {_FAIRSCALE[3]: layers, _FAIRSCALE[4]: initialize}
    saved = {name: sys.modules.get(name) for name in _FAIRSCALE}
    sys.modules.update(fakes)
    try:
        return importlib.import_module(_MODULE)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def meta_llama2(params_json, vocab_size, params, max_seq_len=256):
    """Meta's reference Transformer for a Llama 2 checkpoint: `params_json` (the dict of params.json, whose
    vocab_size is -1; its RoPE base `rope_theta`, where given, else Llama 2's 10,000), the tokenizer's
    `vocab_size`, and `params` (the tensors of consolidated.00.pth, used as they are: no copy). Its cache
    holds `max_seq_len` positions of one sequence."""
    from llama_models.llama3.args import ModelArgs
    module = meta_llama_module()
    rope_theta = float(params_json.get("rope_theta", 10000.0))
    args = ModelArgs(**{**params_json, "vocab_size": vocab_size, "rope_theta": rope_theta}, use_scaled_rope=False,
                     max_seq_len=max_seq_len, max_batch_size=1)
    with torch.device("meta"):  # no memory for weights: they come from `params`
        model = module.Transformer(args)
    weights = {k: v for k, v in params.items() if k != "rope.freqs"}  # Meta's code computes these itself
    model.load_state_dict(weights, strict=True, assign=True)
    # The frequencies and the caches were made on the meta device too: make them again, for real.
    head_dim = args.dim // args.n_heads
    model.freqs_cis = module.precompute_freqs_cis(head_dim, max_seq_len * 2, rope_theta)
    cache_shape = (1, max_seq_len, args.n_kv_heads, head_dim)
    for layer in model.layers:
        layer.attention.cache_k = torch.zeros(cache_shape)  # (Meta's forward casts them to the activations' dtype)
        layer.attention.cache_v = torch.zeros(cache_shape)
    return model.eval()
