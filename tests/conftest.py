import pytest
import torch

from nbsupport import import_notebook


@pytest.fixture(scope="session")
def nb01():
    return import_notebook("01-gpt-from-scratch.ipynb")


@pytest.fixture(scope="session")
def tiny_gpt_cfg(nb01):
    return {**nb01.GPT_CONFIG_124M, "context_length": 32, "emb_dim": 48, "n_heads": 4, "n_layers": 2,
            "drop_rate": 0.0, "vocab_size": 97}


@pytest.fixture
def tiny_gpt(nb01, tiny_gpt_cfg):
    torch.manual_seed(0)
    return nb01.GPTModel(tiny_gpt_cfg).eval()
