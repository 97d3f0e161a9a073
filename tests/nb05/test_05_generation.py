"""Notebook 05, section 3: generation with the cache equals generation without it (and transformers'), eos,
top-k and top-p sampling, the argument checks, copies of what a replayed step returns, same_greedy_tokens."""

import pytest
import torch
import transformers


def test_greedy_with_cache_equals_without_and_transformers(nb05, small):
    model, ref, cfg = small
    prompt = torch.tensor([[5, 77, 123, 9, 200]])
    without = nb05.generate_without_cache(model, prompt, 64)
    theirs = ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=64, do_sample=False,
                          pad_token_id=0)
    assert torch.equal(without, theirs)
    assert torch.equal(nb05.generate(model, prompt, 64, cfg["context_length"]), without)
    assert torch.equal(nb05.generate(model, prompt, 64), without)  # the context size defaults to the model's
    assert torch.equal(nb05.generate(model, prompt, 64, 69), without)  # a context of exactly prompt + new tokens
    assert torch.equal(nb05.generate(model, prompt, 0), prompt)


def test_a_larger_cache_left_by_a_longer_run_gives_the_same_tokens(nb05, varied):
    """setup_kv_cache keeps a cache longer than needed: its slots beyond the sequence hold the keys of the
    earlier, longer run, and the mask hides them."""
    model, cfg = varied
    prompt = torch.tensor([[4, 8, 15, 16, 23]])
    expected = nb05.generate_without_cache(model, prompt, 12)
    nb05.generate(model, torch.tensor([[7, 7, 7, 1, 2, 3, 4, 5]]), 40)  # at least 48 slots, written
    cache = model.trf_blocks[0].att.kv_cache
    assert torch.equal(nb05.generate(model, prompt, 12), expected)
    assert model.trf_blocks[0].att.kv_cache is cache and cache.k.shape[2] >= 48


def test_prefilling_in_two_parts_equals_one_prefill(nb05, varied):
    """generate_tokens from a later slot (first_pos), after the beginning of the prompt is in the cache (what the
    conversation of Appendix B does), gives the tokens of the whole prompt prefilled at once; and so does the
    prompt fed one token at a time through the decode step."""
    model, cfg = varied
    prompt = torch.tensor([[4, 8, 15, 16, 23, 42, 7, 9]])
    expected = nb05.generate(model, prompt, 16)[:, 8:]
    model.setup_kv_cache(1, 24)
    list(nb05.generate_tokens(model, prompt[:, :5], 1))  # slots 0-4
    rest = list(nb05.generate_tokens(model, prompt[:, 5:], 16, first_pos=5))
    assert torch.equal(torch.cat(rest, dim=1), expected)
    model.setup_kv_cache(1, 24)
    with torch.inference_mode():
        for i in range(8):  # the prompt token by token
            token = nb05.decode_one_token(model, prompt[:, i:i + 1], torch.tensor([i]))
        new = [token]
        for i in range(8, 8 + 15):
            new.append(nb05.decode_one_token(model, new[-1], torch.tensor([i])))
    assert torch.equal(torch.cat(new, dim=1), expected)


def test_generate_tokens_leaves_the_tokens_on_the_device_as_b_by_1_tensors(nb05, varied):
    model, _ = varied
    prompt = torch.tensor([[4, 8, 15], [16, 23, 42]])
    model.setup_kv_cache(2, 8)
    tokens = list(nb05.generate_tokens(model, prompt, 5))
    assert len(tokens) == 5 and all(isinstance(t, torch.Tensor) and t.shape == (2, 1) for t in tokens)
    assert torch.equal(torch.cat([prompt, *tokens], dim=1), nb05.generate(model, prompt, 5))


def test_generate_keeps_copies_of_what_a_replayed_step_returns(nb05, varied, an_eos, replaying_step):
    model, cfg = varied
    prompt = torch.tensor([[4, 8, 15, 16, 23]])
    expected = nb05.generate_without_cache(model, prompt, 24)
    new = expected[0, 5:].tolist()
    assert len(set(new)) >= 4, new  # a step that kept the overwritten buffer would repeat its last token
    eos, k = an_eos(new)
    assert torch.equal(nb05.generate(model, prompt, 24, cfg["context_length"], decode_step=replaying_step()), expected)
    assert torch.equal(nb05.generate(model, prompt, 24, cfg["context_length"], eos_id=999,
                                     decode_step=replaying_step()), expected)
    assert torch.equal(nb05.generate(model, prompt, 24, cfg["context_length"], eos_id=[999, eos],
                                     decode_step=replaying_step()), expected[:, :5 + k])  # stops before eos
    # the same with a batch of two, a list of prompts, and streamed
    two = nb05.generate(model, prompt.repeat(2, 1), 24, decode_step=replaying_step())
    assert torch.equal(two, expected.repeat(2, 1))
    (listed,) = nb05.generate(model, [prompt[0]], 24, eos_id=eos, decode_step=replaying_step())
    assert torch.equal(listed, expected[0, :5 + k])
    assert list(nb05.generate(model, prompt, 24, decode_step=replaying_step(), stream=True)) == new


def test_same_greedy_tokens_is_exact_in_float32_and_allows_only_near_ties_in_16_bit(nb05, small):
    model, _, cfg = small
    prompt = torch.tensor([[5, 77, 123, 9, 200]])
    greedy = nb05.generate_without_cache(model, prompt, 12)
    assert nb05.same_greedy_tokens(model, greedy, greedy.clone()) == 0
    other = greedy.clone()
    other[0, -3] = (other[0, -3] + 1) % cfg["vocab_size"]
    with pytest.raises(AssertionError, match="different tokens"):
        nb05.same_greedy_tokens(model, other, greedy)  # float32: no near-tie excuses

    half = nb05.with_weights_in(model, torch.bfloat16)
    greedy = nb05.generate_without_cache(half, prompt, 12)
    with pytest.raises(AssertionError, match="different tokens"):
        nb05.same_greedy_tokens(half, greedy[:, :-1], greedy)  # other shapes: never a near-tie
    with torch.inference_mode():
        logits = half(greedy[:, :-1])[0, prompt.shape[1] - 1:].float()  # at each generated position
    chosen = greedy[0, prompt.shape[1]:]
    runner_up = logits.scatter(1, chosen[:, None], float("-inf")).argmax(dim=-1)  # the best of the other tokens
    gaps = logits.gather(1, chosen[:, None])[:, 0] - logits.gather(1, runner_up[:, None])[:, 0]
    near, far = gaps.argmin().item(), gaps.argmax().item()
    assert gaps[near] <= nb05.NEAR_TIE < gaps[far], gaps  # random weights have both kinds of position
    for j, accepted in ((near, True), (far, False)):
        parted = greedy.clone()
        parted[0, prompt.shape[1] + j] = runner_up[j]  # the runner-up token, then the greedy tokens after it
        parted[0, prompt.shape[1] + j + 1:] = nb05.generate_without_cache(
            half, parted[:, :prompt.shape[1] + j + 1], 12 - j - 1)[0, prompt.shape[1] + j + 1:]
        if accepted:
            assert nb05.same_greedy_tokens(half, parted, greedy) == 1
            both = torch.cat([greedy, parted])
            assert nb05.same_greedy_tokens(half, both, torch.cat([greedy, greedy])) == 1  # rows counted
        else:
            with pytest.raises(AssertionError, match=f"^the tokens part at position {prompt.shape[1] + j}, where "
                                                     "their logits differ by"):
                nb05.same_greedy_tokens(half, parted, greedy)


def test_generation_stops_at_eos(nb05, varied, an_eos):
    model, cfg = varied
    prompt = torch.tensor([[1, 2, 3]])
    greedy = nb05.generate(model, prompt, 10, cfg["context_length"])
    eos, k = an_eos(greedy[0, 3:].tolist())
    assert nb05.generate(model, prompt, 10, cfg["context_length"], eos_id=eos)[0].tolist() == greedy[0, :3 + k].tolist()
    assert torch.equal(nb05.generate(model, prompt, 10, eos_id=[]), greedy)  # no stop id: no stop


def test_top_k_sampling_stays_in_the_top_k(nb05, small):
    model, _, cfg = small
    prompt = torch.tensor([[4, 8, 15]])
    with torch.no_grad():
        best = set(torch.topk(model(prompt)[0, -1], 4).indices.tolist())
    torch.manual_seed(0)
    seen = {nb05.generate(model, prompt, 1, cfg["context_length"], temperature=5.0, top_k=4)[0, -1].item()
            for _ in range(200)}
    assert seen <= best and len(seen) > 1


def test_sampling_draws_each_token_as_often_as_its_probability(nb05):
    row = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    expected = torch.softmax(row.masked_fill(row < row.topk(3).values[-1], float("-inf")) / 0.8, dim=-1)
    torch.manual_seed(0)
    draws = nb05.sample(row.expand(100_000, -1), temperature=0.8, top_k=3)[:, 0]
    frequency = torch.bincount(draws, minlength=len(row)) / len(draws)
    assert (frequency - expected).abs().max() < 0.01, frequency
    assert torch.equal(nb05.sample(row[None]), torch.tensor([[0]]))  # temperature 0: greedy


@pytest.mark.parametrize("top_p", [1e-6, 0.3, 0.8, 0.95, 1.0])
def test_top_p_keeps_the_tokens_transformers_keeps(nb05, top_p):
    logits = torch.randn(32, 2000, generator=torch.Generator().manual_seed(4)) * 4
    theirs = torch.isfinite(transformers.TopPLogitsWarper(top_p)(None, logits.clone()))
    kept = nb05.keep_top_p(torch.softmax(logits, dim=-1), top_p) > 0
    assert torch.equal(kept, theirs)
    if top_p == 1e-6:
        assert kept.sum(dim=-1).eq(1).all()  # the most likely token alone
    torch.manual_seed(0)
    drawn = torch.cat([nb05.sample(logits, 1.0, None, top_p) for _ in range(20)], dim=1)
    assert kept.gather(1, drawn).all()  # every draw is from the nucleus


def test_top_p_sampling_with_the_model(nb05, small):
    model, _, cfg = small
    prompt = torch.tensor([[4, 8, 15]])
    with torch.no_grad():
        nucleus = nb05.keep_top_p(torch.softmax(model(prompt)[:, -1] / 2.0, dim=-1), 0.5)[0].nonzero().flatten()
    torch.manual_seed(0)
    seen = {nb05.generate(model, prompt, 1, cfg["context_length"], temperature=2.0, top_p=0.5)[0, -1].item()
            for _ in range(100)}
    assert seen <= set(nucleus.tolist()) and len(seen) > 1


def test_sampled_generation_with_the_cache_repeats_with_the_seed(nb05, varied):
    model, _ = varied
    prompt = torch.tensor([[4, 8, 15]])
    torch.manual_seed(1)
    first = nb05.generate(model, prompt, 16, temperature=1.5, top_k=50, top_p=0.9)
    torch.manual_seed(1)
    assert torch.equal(nb05.generate(model, prompt, 16, temperature=1.5, top_k=50, top_p=0.9), first)
    assert not torch.equal(first, nb05.generate(model, prompt, 16))  # sampled, not greedy


@pytest.mark.parametrize("kwargs, message", [
    ({"max_new_tokens": -1}, r"^max_new_tokens must be >= 0, got -1$"),
    ({"top_p": 0.0}, r"^top_p must be None or in \(0, 1\], got 0.0$"),
    ({"top_p": 1.5}, r"^top_p must be None or in \(0, 1\], got 1.5$"),
    ({"temperature": -1.0}, r"^temperature must be >= 0 \(0: greedy\), got -1.0$"),
    ({"temperature": float("nan")}, r"^temperature must be >= 0 \(0: greedy\), got nan$"),
    ({"temperature": float("inf")}, r"^temperature must be >= 0 \(0: greedy\), got inf$"),
    ({"top_k": 0}, r"^top_k must be None or 1 to 257, got 0$"),
    ({"top_k": 258}, r"^top_k must be None or 1 to 257, got 258$"),
    ({"max_new_tokens": 250}, r"^the prompt \(10 tokens\) \+ max_new_tokens \(250\) exceed the context size \(256\); "
                              r"shorten it or generate fewer tokens$"),
    ({"context_size": 12}, r"^the prompt \(10 tokens\) \+ max_new_tokens \(5\) exceed the context size \(12\); "
                           r"shorten it or generate fewer tokens$"),
    ({"context_size": 512}, r"^context_size must be at most the model's 256, got 512$"),
])
def test_generate_rejects_bad_arguments(nb05, small, kwargs, message):
    model, _, cfg = small
    args = {"max_new_tokens": 5, "context_size": cfg["context_length"], **kwargs}
    with pytest.raises(ValueError, match=message):
        nb05.generate(model, torch.zeros(1, 10, dtype=torch.long), **args)


@pytest.mark.parametrize("idx, message", [
    (torch.zeros(1, 0, dtype=torch.long), r"^the prompt has 0 tokens: give 1 to 256 \(the context length\)$"),
    (torch.tensor([1, 2, 3]), r"^token ids must be a tensor \(batch, seq\), got torch.Size\(\[3\]\); for one prompt: "
                              r"ids\[None\]$"),
    (torch.tensor([[1.0, 2.0]]), r"^token ids must be integers, got torch.float32; convert them with .long\(\)$"),
    (torch.tensor([[True, False]]), r"^token ids must be integers, got torch.bool; convert them with .long\(\)$"),
    (torch.tensor([[1, 257]]), r"^token ids must be in \[0, 257\), got 1 to 257; was the prompt encoded with this "
                               r"model's tokenizer\?$"),
    (torch.tensor([[-1, 2]]), r"^token ids must be in \[0, 257\), got -1 to 2; was the prompt encoded"),
    ("Hello", r"^token ids must be a tensor \(batch, seq\), got <class 'str'>; for one prompt: ids\[None\]$"),
])
def test_generate_and_model_reject_bad_prompts(nb05, small, idx, message):
    model, _, cfg = small
    with pytest.raises(ValueError, match=message):
        nb05.generate(model, idx, 5, cfg["context_length"])
    with pytest.raises(ValueError, match=message):
        model(idx)
