"""The benchmark compares implementations that compute the same thing: its correctness check must pass."""

import sys

import pytest
import torch

from nbsupport.notebooks import REPO_ROOT

pytest.importorskip("llms_from_scratch", reason="pip install --no-deps llms-from-scratch (see README)")
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import generation  # noqa: E402


def test_all_implementations_give_the_same_greedy_tokens():
    assert generation.check_same_tokens(torch.device("cpu")) == 5


def test_peers_receive_the_same_weights():
    cfg = {**generation.nb05.LLAMA32_CONFIG_1B, "vocab_size": 64, "context_length": 64, "emb_dim": 32,
           "n_heads": 4, "n_kv_groups": 2, "n_layers": 1, "hidden_dim": 48, "dtype": torch.float32}
    hf = generation.hf_model(cfg)
    ours = generation.ours_from(generation.hub_params(hf), cfg)
    lfs = generation.lfs_from(ours, cfg)
    assert ours.trf_blocks[0].ff.fc1.weight.data_ptr() == hf.model.layers[0].mlp.gate_proj.weight.data_ptr()
    assert lfs.trf_blocks[0].ff.fc1.weight.data_ptr() == hf.model.layers[0].mlp.gate_proj.weight.data_ptr()
