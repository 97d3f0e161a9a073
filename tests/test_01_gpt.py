"""Notebook 01's model and generation, against PyTorch built-ins and first principles."""

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from nbsupport.training import check_loaders, training_bytes, training_plan, training_schedule


def test_multi_head_attention_equals_sdpa(nb01):
    torch.manual_seed(1)
    mha = nb01.MultiHeadAttention(d_in=24, d_out=32, context_length=20, dropout=0.0, num_heads=4, qkv_bias=True)
    x = torch.randn(3, 17, 24)
    split = lambda y: rearrange(y, "b t (h d) -> b h t d", h=4)
    ref = F.scaled_dot_product_attention(split(mha.W_query(x)), split(mha.W_key(x)), split(mha.W_value(x)),
                                         is_causal=True)
    ref = mha.out_proj(rearrange(ref, "b h t d -> b t (h d)"))
    torch.testing.assert_close(mha(x), ref, atol=1e-6, rtol=1e-5)


def torch_mha_with_weights_of(mha, d, num_heads):
    """nn.MultiheadAttention holding `mha`'s projections (its in_proj stacks Q, K, V), as notebook 01's check builds it."""
    ref = torch.nn.MultiheadAttention(embed_dim=d, num_heads=num_heads, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.W_query.weight, mha.W_key.weight, mha.W_value.weight]))
        ref.in_proj_bias.copy_(torch.cat([mha.W_query.bias, mha.W_key.bias, mha.W_value.bias]))
        ref.out_proj.load_state_dict(mha.out_proj.state_dict())
    return ref


def test_multi_head_attention_equals_nn_multihead_attention_and_the_check_sees_a_wrong_head_split(nb01):
    torch.manual_seed(1)
    mha = nb01.MultiHeadAttention(d_in=32, d_out=32, context_length=16, dropout=0.0, num_heads=4, qkv_bias=True).eval()
    ref = torch_mha_with_weights_of(mha, 32, 4)
    x = torch.randn(2, 10, 32)
    causal = torch.ones(10, 10, dtype=torch.bool).triu(diagonal=1)
    expected = ref(x, x, x, attn_mask=causal, need_weights=False)[0]
    torch.testing.assert_close(mha(x), expected, atol=1e-5, rtol=1e-5)

    class WrongHeadSplit(nb01.MultiHeadAttention):  # each head takes every 4th feature, not a contiguous slice
        def forward(self, x):
            q, k, v = (rearrange(W(x), "b t (d h) -> b h t d", h=self.num_heads)
                       for W in (self.W_query, self.W_key, self.W_value))
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.out_proj(rearrange(out, "b h t d -> b t (d h)"))

    wrong = WrongHeadSplit(d_in=32, d_out=32, context_length=16, dropout=0.0, num_heads=4, qkv_bias=True).eval()
    wrong.load_state_dict(mha.state_dict())
    assert (wrong(x) - expected).abs().max() > 1e-2


def test_layernorm_with_a_random_scale_and_shift_equals_nn_layernorm_and_not_with_the_unbiased_variance(nb01):
    torch.manual_seed(1)
    x = 3 * torch.randn(2, 5, 64) + 1
    ours, ref = nb01.LayerNorm(64), torch.nn.LayerNorm(64)
    with torch.no_grad():
        ours.scale.normal_(), ours.shift.normal_()
        ref.weight.copy_(ours.scale), ref.bias.copy_(ours.shift)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    unbiased = ours.scale * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + ours.eps) + ours.shift
    assert (unbiased - ref(x)).abs().max() > 1e-3  # the check tells the two variances apart


def test_top_k_at_temperature_2_draws_the_k_best_as_often_as_the_renormalised_softmax(nb01, tiny_gpt):
    idx = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        top = torch.topk(tiny_gpt(idx)[0, -1] * 20, 3)  # (scaled: the tiny model's logits are nearly flat)
    expected = torch.softmax(top.values / 2.0, dim=-1)
    scaled = copy.deepcopy(tiny_gpt)
    with torch.no_grad():
        scaled.out_head.weight.mul_(20)
    torch.manual_seed(0)
    draws = nb01.generate(scaled, idx.repeat(10_000, 1), 1, 32, temperature=2.0, top_k=3)[:, -1]
    frequency = torch.stack([(draws == i).float().mean() for i in top.indices])
    assert frequency.sum() == 1 and (frequency - expected).abs().max() < 0.03, (frequency, expected)
    at_temperature_1 = torch.softmax(top.values, dim=-1)  # what a generate that ignored the temperature would draw
    assert (at_temperature_1 - expected).abs().max() > 0.05


def test_with_stride_equal_to_the_length_each_window_starts_where_the_last_ones_targets_end(nb01):
    text = " ".join(f"w{i}" for i in range(200))
    inputs, targets = next(iter(nb01.create_dataloader_v1(text, batch_size=2, max_length=6, stride=6, shuffle=False)))
    assert inputs[1, 0] == targets[0, -1]
    inputs, targets = next(iter(nb01.create_dataloader_v1(text, batch_size=2, max_length=6, stride=5, shuffle=False)))
    assert inputs[1, 0] != targets[0, -1] and inputs[1, 0] == inputs[0, -1]  # overlapping windows


def test_attention_is_causal(nb01):
    torch.manual_seed(1)
    mha = nb01.MultiHeadAttention(16, 16, context_length=10, dropout=0.0, num_heads=2)
    x = torch.randn(1, 10, 16)
    y = x.clone()
    y[:, 6:] = torch.randn(1, 4, 16)  # change the future only
    torch.testing.assert_close(mha(x)[:, :6], mha(y)[:, :6])


def test_layernorm_and_gelu_equal_builtins(nb01):
    x = torch.randn(4, 7, 64)
    torch.testing.assert_close(nb01.LayerNorm(64)(x), torch.nn.LayerNorm(64)(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nb01.GELU()(x), F.gelu(x, approximate="tanh"), atol=1e-6, rtol=1e-6)


def test_gpt_shapes_and_parameter_count(nb01, tiny_gpt, tiny_gpt_cfg):
    idx = torch.randint(0, tiny_gpt_cfg["vocab_size"], (2, 11))
    assert tiny_gpt(idx).shape == (2, 11, tiny_gpt_cfg["vocab_size"])
    with torch.device("meta"):
        full = nb01.GPTModel(nb01.GPT_CONFIG_124M)
    total = sum(p.numel() for p in full.parameters())
    assert total == 163_009_536
    assert total - full.out_head.weight.numel() == 124_412_160
    assert set(nb01.GPT_CONFIG_124M) == {"vocab_size", "context_length", "emb_dim", "n_heads", "n_layers",
                                         "drop_rate", "qkv_bias"}


def test_greedy_generate_equals_repeated_argmax(nb01, tiny_gpt):
    idx = torch.tensor([[5, 17, 3]])
    expected = idx
    for _ in range(12):
        with torch.no_grad():
            next_id = tiny_gpt(expected)[0, -1].argmax()
        expected = torch.cat([expected, next_id.view(1, 1)], dim=1)
    out = nb01.generate(tiny_gpt, idx, max_new_tokens=12, context_size=32)
    assert torch.equal(out, expected)
    assert torch.equal(nb01.generate_text_simple(tiny_gpt, idx, 12, 32), expected)


def test_top_k_never_samples_outside_the_k_best(nb01, tiny_gpt):
    idx = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        best = set(torch.topk(tiny_gpt(idx)[0, -1], 5).indices.tolist())
    torch.manual_seed(0)
    seen = {nb01.generate(tiny_gpt, idx, 1, 32, temperature=10.0, top_k=5)[0, -1].item() for _ in range(300)}
    assert seen <= best
    assert len(seen) > 1  # it does sample, not argmax


def test_generation_stops_at_eos(nb01, tiny_gpt):
    idx = torch.tensor([[1, 2, 3]])
    greedy = nb01.generate(tiny_gpt, idx, max_new_tokens=6, context_size=32)
    eos = greedy[0, 5].item()  # the third generated token
    first = greedy[0, 3:].tolist().index(eos)  # it may appear earlier
    out = nb01.generate(tiny_gpt, idx, max_new_tokens=6, context_size=32, eos_id=eos)
    assert out[0].tolist() == greedy[0, :3 + first].tolist()


def test_long_prompt_is_cropped_to_context(nb01, tiny_gpt):
    long_prompt = torch.randint(0, 97, (1, 50))
    out = nb01.generate(tiny_gpt, long_prompt, max_new_tokens=2, context_size=32)
    with torch.no_grad():
        first = tiny_gpt(long_prompt[:, -32:])[0, -1].argmax().item()
    assert out.shape == (1, 52) and out[0, 50].item() == first


def test_a_context_size_beyond_the_models_is_refused_with_the_limit(nb01, tiny_gpt):
    with pytest.raises(ValueError, match=r"^input has 40 tokens, more than the context length \(32\); crop it to the "
                                         r"last tokens \(in generate: context_size at most 32\)$"):
        nb01.generate(tiny_gpt, torch.randint(0, 97, (1, 50)), max_new_tokens=2, context_size=40)


@pytest.mark.parametrize("kwargs, name", [
    ({"top_k": 0}, "^top_k must be None or between 1 and the vocabulary size \\(97\\), got 0$"),
    ({"top_k": 98}, "^top_k must be None or between 1 and the vocabulary size \\(97\\), got 98$"),
    ({"temperature": -0.5}, "^temperature must be a finite number >= 0 \\(0 means greedy\\), got -0.5$"),
    ({"temperature": float("nan")}, "^temperature must be a finite number >= 0 \\(0 means greedy\\), got nan$"),
    ({"temperature": float("inf")}, "^temperature must be a finite number >= 0 \\(0 means greedy\\), got inf$"),
    ({"max_new_tokens": -1}, "^max_new_tokens must be >= 0, got -1$"),
])
def test_bad_sampling_arguments_raise(nb01, tiny_gpt, kwargs, name):
    args = {"max_new_tokens": 3, "context_size": 32, **kwargs}
    with pytest.raises(ValueError, match=name):
        nb01.generate(tiny_gpt, torch.tensor([[1]]), **args)


@pytest.mark.parametrize("idx, message", [
    (torch.zeros(1, 0, dtype=torch.long), "the prompt is empty"),
    (torch.tensor([1, 2]), "token ids must be a tensor of shape \\(batch, seq\\), got torch.Size\\(\\[2\\]\\); "
                           "for a single prompt use ids.unsqueeze\\(0\\)"),
    (torch.tensor([[1.0, 2.0]]), "token ids must be integers, got torch.float32"),
    (torch.tensor([[3, 97]]), "token ids must be in \\[0, 97\\), got ids from 3 to 97; was the prompt encoded"),
])
def test_bad_prompts_raise(nb01, tiny_gpt, idx, message):
    with pytest.raises(ValueError, match=message):
        nb01.generate(tiny_gpt, idx, max_new_tokens=3, context_size=32)


def test_dataset_targets_are_inputs_shifted_by_one(nb01):
    loader = nb01.create_dataloader_v1("a b c d e f g h i j k l m n o p " * 20, batch_size=3, max_length=8,
                                       stride=4, shuffle=False)
    for inputs, targets in loader:
        assert inputs.shape == targets.shape == (3, 8)
        assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_loss_of_uniform_model_is_log_vocab(nb01, tiny_gpt_cfg):
    class Uniform(torch.nn.Module):
        def forward(self, idx):
            return torch.zeros(*idx.shape, tiny_gpt_cfg["vocab_size"])
    inputs = torch.randint(0, 97, (2, 5))
    loss = nb01.calc_loss_batch(inputs, inputs, Uniform(), "cpu")
    assert loss.item() == pytest.approx(torch.log(torch.tensor(97.0)).item(), rel=1e-6)


def test_loss_of_a_batch_is_the_mean_negative_log_probability_of_its_targets(nb01):
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 97)

    class Fixed(torch.nn.Module):
        def forward(self, idx):
            return logits

    inputs, targets = torch.randint(0, 97, (2, 5)), torch.randint(0, 97, (2, 5))
    expected = -torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).mean()
    torch.testing.assert_close(nb01.calc_loss_batch(inputs, targets, Fixed(), "cpu"), expected)


def test_training_plan_on_a_gpu_fits_its_memory_and_falls_back(nb01):
    """The GPU branch's choice at the memory of a T4 (16 GB card), an 8 GB card and a 2 GB card."""
    text = "x" * 1000
    plan = lambda device, **kw: training_plan(device, text, nb01.GPTModel, nb01.GPT_CONFIG_124M, nb01.GPT_CONFIG_SMALL, **kw)
    t4 = plan(torch.device("cuda"), free_bytes=14.7 * 2**30)
    assert t4["cfg"]["n_layers"] == 12 and t4["cfg"]["context_length"] == 256 and t4["batch_size"] == 8
    assert t4["corpus"] == text and t4["lr"] == 4e-4
    assert training_bytes(t4["cfg"], 8, nb01.GPTModel) <= 0.8 * 14.7 * 2**30 < training_bytes(t4["cfg"], 16, nb01.GPTModel)
    assert plan(torch.device("cuda"), free_bytes=7.5 * 2**30)["batch_size"] == 2
    small = plan(torch.device("cuda"), free_bytes=2 * 2**30)
    assert small["cfg"] is nb01.GPT_CONFIG_SMALL and small["batch_size"] == 8
    assert plan(torch.device("cpu"))["cfg"] is nb01.GPT_CONFIG_SMALL


def test_training_bytes_grows_with_the_batch_by_the_logits_and_activations(nb01):
    cfg = {**nb01.GPT_CONFIG_124M, "context_length": 256}
    per_window = training_bytes(cfg, 2, nb01.GPTModel) - training_bytes(cfg, 1, nb01.GPTModel)
    assert per_window == 4 * 256 * (90 * 12 * 768 + 3 * 50257)
    with torch.device("meta"):
        n_params = sum(p.numel() for p in nb01.GPTModel(cfg).parameters())
    assert training_bytes(cfg, 1, nb01.GPTModel) - per_window == 16 * n_params  # weights, gradients, AdamW's 2 moments


@pytest.mark.parametrize("steps_per_epoch, expected", [(123, (1, 20)), (44, (3, 22)), (22, (5, 18)), (500, (1, 83))])
def test_training_schedule_evaluates_about_six_times_in_at_least_100_steps(nb01, steps_per_epoch, expected):
    num_epochs, eval_freq = training_schedule(steps_per_epoch)
    assert (num_epochs, eval_freq) == expected
    steps = num_epochs * steps_per_epoch
    assert steps >= 100 and 6 <= len(range(0, steps, eval_freq)) <= 7  # the loop evaluates at steps 0, eval_freq, ...


def test_a_text_too_short_to_train_on_is_refused_with_the_length_needed(nb01):
    cfg = {**nb01.GPT_CONFIG_SMALL, "context_length": 8}
    loaders = lambda text: [nb01.create_dataloader_v1(part, batch_size=4, max_length=8, stride=8, shuffle=False,
                                                      drop_last=drop) for part, drop in
                            [(text[:int(0.9 * len(text))], True), (text[int(0.9 * len(text)):], False)]]
    with pytest.raises(ValueError, match=r"^the text is too short to train on: 90% of it must hold 4 windows of 8 "
                                         r"tokens and the last 10% one window; give at least about 90 tokens$"):
        check_loaders(*loaders(" word" * 60), cfg, batch_size=4)
    check_loaders(*loaders(" word" * 90), cfg, batch_size=4)  # " word" is one token: 90 tokens are enough
    # the training side too short alone: 90 training tokens hold 11 windows of 8, not a batch of 16
    with pytest.raises(ValueError, match=r"must hold 16 windows of 8 tokens and the last 10% one window; give at "
                                         r"least about 144 tokens$"):
        check_loaders(*[nb01.create_dataloader_v1(part, batch_size=16, max_length=8, stride=8, shuffle=False,
                                                       drop_last=drop) for part, drop in
                             [(" word" * 90, True), (" word" * 10, False)]], cfg, batch_size=16)


def saved_activation_bytes(model, idx):
    """Bytes of the tensors autograd keeps for the backward pass of one training step (the loss of a batch),
    parameters left out, each storage counted once."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(idx)
        F.cross_entropy(logits.flatten(0, 1), idx.flatten())
    return sum(storages.values())


def test_training_bytes_per_window_bounds_what_autograd_keeps_for_it(nb01):
    """training_bytes' 90 numbers per token, layer and width for the activations against what autograd keeps
    for one 256-token window of the 124M model (the GPU plan's windows), measured here: about 46 of them, so
    the estimate is an upper bound with a margin, not a wild one."""
    cfg = {**nb01.GPT_CONFIG_124M, "context_length": 256}
    torch.manual_seed(0)
    model = nb01.GPTModel(cfg).train()
    measured = saved_activation_bytes(model, torch.randint(0, cfg["vocab_size"], (1, 256)))
    t, d, n_layers, vocab = 256, 768, 12, 50257
    activations = measured - 4 * t * vocab  # less the saved log-softmax of the logits: a number per token and entry
    per_token_layer_width = activations / (4 * t * n_layers * d)
    assert 40 <= per_token_layer_width <= 52, per_token_layer_width


def test_training_on_the_cpu_plan_makes_the_loss_fall_and_the_model_write_words_of_the_text(nb01):
    """Notebook 01's training, as its CPU plan runs it (the small GPT, the first 300,000 characters of Python's help
    topics, about 120 steps): the validation loss falls by more than 2, and of the different words in the trained
    model's greedy continuation of "The for statement" at least 90% are words of the text, 30 points more than the
    untrained model's (the same initial weights)."""
    from pydoc_data.topics import topics

    from nbsupport import seed_tiktoken_gpt2

    seed_tiktoken_gpt2()  # GPT-2's vocabulary files for tiktoken, offline
    tokenizer = nb01.tiktoken.get_encoding("gpt2")
    text = " ".join("\n\n".join(topics[name] for name in sorted(topics)).split())
    plan = training_plan(torch.device("cpu"), text, nb01.GPTModel, nb01.GPT_CONFIG_124M, nb01.GPT_CONFIG_SMALL)
    cfg, corpus, batch_size = plan["cfg"], plan["corpus"], plan["batch_size"]
    split = int(0.9 * len(corpus))
    torch.manual_seed(123)
    train_loader = nb01.create_dataloader_v1(corpus[:split], batch_size=batch_size, max_length=cfg["context_length"],
                                             stride=cfg["context_length"], shuffle=True, drop_last=True)
    val_loader = nb01.create_dataloader_v1(corpus[split:], batch_size=batch_size, max_length=cfg["context_length"],
                                           stride=cfg["context_length"], shuffle=False, drop_last=False)
    num_epochs, eval_freq = training_schedule(len(train_loader))
    torch.manual_seed(123)
    model = nb01.GPTModel(cfg)
    torch.manual_seed(123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan["lr"], weight_decay=0.1)
    _, val_losses, _ = nb01.train_model_simple(model, train_loader, val_loader, optimizer, "cpu", num_epochs=num_epochs,
                                               eval_freq=eval_freq, eval_iter=4, start_context="The for statement",
                                               tokenizer=tokenizer)
    assert val_losses[-1] < val_losses[0] - 2.0, val_losses
    words_of_text = set(re.findall(r"[A-Za-z]{2,}", corpus))
    start = nb01.text_to_token_ids("The for statement", tokenizer)

    def share_of_text_words(m):
        ids = nb01.generate_text_simple(m.eval(), start, 30, cfg["context_length"])
        words = set(re.findall(r"[A-Za-z]{2,}", nb01.token_ids_to_text(ids, tokenizer).removeprefix("The for statement")))
        return len(words & words_of_text) / max(len(words), 1)

    torch.manual_seed(123)
    trained, untrained = share_of_text_words(model), share_of_text_words(nb01.GPTModel(cfg))
    assert trained >= 0.9 and trained >= untrained + 0.3, (trained, untrained)

