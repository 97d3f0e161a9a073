"""Notebook 05, Appendices A and B: a batch of prompts of different lengths (left_pad, unpad, the positions and
mask of each sequence) gives each prompt its tokens alone, eagerly and compiled; and a conversation that keeps
its cache between turns answers as the whole dialogue re-encoded does."""

import pytest
import torch


def test_left_pad_and_unpad(nb05):
    prompts = [torch.tensor([11, 12, 13]), torch.tensor([21, 22, 23, 24, 25])]
    batch, start = nb05.left_pad(prompts, 32, 8)
    assert batch.tolist() == [[0, 0, 11, 12, 13], [21, 22, 23, 24, 25]] and start.tolist() == [2, 0]
    batch, start = nb05.left_pad(tuple(prompts), 32, 8)  # a tuple too
    assert start.tolist() == [2, 0]
    new = torch.tensor([[5, 9, 6, 9], [7, 8, 5, 9]])
    assert [p.tolist() for p in nb05.unpad(prompts, new, None)] == [[11, 12, 13, 5, 9, 6, 9], [21, 22, 23, 24, 25, 7, 8, 5, 9]]
    assert [p.tolist() for p in nb05.unpad(prompts, new, 9)] == [[11, 12, 13, 5], [21, 22, 23, 24, 25, 7, 8, 5]]
    assert [p.tolist() for p in nb05.unpad(prompts, new, [6, 8])] == [[11, 12, 13, 5, 9], [21, 22, 23, 24, 25, 7]]
    assert [p.tolist() for p in nb05.unpad(prompts, new[:, :0], 9)] == [[11, 12, 13], [21, 22, 23, 24, 25]]


def test_ragged_batch_gives_each_prompt_its_tokens_alone_eager_and_compiled(nb05, varied, varied_step, ragged):
    model, cfg = varied
    ctx, prompts = cfg["context_length"], ragged([3, 7, 12, 20])
    alone = [nb05.generate(model, p[None], 24, ctx)[0] for p in prompts]
    assert all(len(set(a[len(p):].tolist())) >= 4 for a, p in zip(alone, prompts))  # varied continuations
    for kwargs in ({}, {"decode_step": varied_step}):
        batched = nb05.generate(model, prompts, 24, ctx, **kwargs)
        assert isinstance(batched, list) and len(batched) == 4, kwargs
        for one, other in zip(alone, batched):
            assert other.ndim == 1 and torch.equal(one, other), kwargs
    # a batch of one, and a batch after a longer batch (another batch size: caches of its own)
    assert torch.equal(nb05.generate(model, prompts[:1], 24, ctx)[0], alone[0])
    assert all(torch.equal(a, b) for a, b in zip(nb05.generate(model, prompts[1:], 24, ctx), alone[1:]))
    # the same prompts in another order, in a cache left by a longer run of the same batch size
    nb05.generate(model, prompts[::-1], 40, ctx)
    cache = model.trf_blocks[0].att.kv_cache
    assert all(torch.equal(a, b) for a, b in zip(nb05.generate(model, prompts, 24, ctx), alone))
    assert model.trf_blocks[0].att.kv_cache is cache
    assert [p.tolist() for p in nb05.generate(model, prompts, 0, ctx)] == [p.tolist() for p in prompts]


def test_ragged_batch_stops_each_sequence_at_eos(nb05, varied, varied_step, ragged):
    model, cfg = varied
    ctx, prompts = cfg["context_length"], ragged([3, 7, 12, 20], seed=1)
    alone = [nb05.generate(model, p[None], 24, ctx)[0] for p in prompts]
    new = alone[1][7:].tolist()
    k = next(k for k in range(2, 24) if new[k] not in new[:k] and new[k] not in alone[0][3:].tolist())
    eos = new[k]  # prompt 1 generates it first at step k, prompt 0 never

    def cut(sequence, prompt):
        new = sequence[len(prompt):].tolist()
        return sequence[:len(prompt) + new.index(eos)] if eos in new else sequence

    expected = [cut(a, p) for a, p in zip(alone, prompts)]
    assert len(expected[1]) == 7 + k and any(len(e) == len(p) + 24 for e, p in zip(expected, prompts))
    for kwargs in ({}, {"decode_step": varied_step}):  # 24 new tokens: the shapes compiled above
        got = nb05.generate(model, prompts, 24, ctx, eos_id=eos, **kwargs)
        assert [g.tolist() for g in got] == [e.tolist() for e in expected], kwargs
    # A tensor batch stays rectangular: a finished sequence is padded with eos_id, the others go on.
    other = next(q for q in (prompts[1].roll(r) for r in range(1, 7))
                 if eos not in nb05.generate(model, q[None], 24, ctx)[0, 7:].tolist())
    out = nb05.generate(model, torch.stack([prompts[1], other]), 24, ctx, eos_id=eos)
    assert out.shape == (2, 7 + 24)
    assert out[0].tolist() == expected[1].tolist() + [eos] * (24 - k)
    assert torch.equal(out[1], nb05.generate(model, other[None], 24, ctx)[0])
    # with a list of end ids, a finished sequence is padded with the first
    first = min(set(range(cfg["vocab_size"])) - set(out[1, 7:].tolist()) - set(expected[1].tolist()))
    out = nb05.generate(model, torch.stack([prompts[1], other]), 24, ctx, eos_id=[first, eos])
    assert out[0].tolist() == expected[1].tolist() + [eos] + [first] * (24 - k - 1)
    assert torch.equal(out[1], nb05.generate(model, other[None], 24, ctx)[0])
    # when every sequence has finished, generation stops
    assert nb05.generate(model, prompts[1][None], 24, ctx, eos_id=eos).shape == (1, 7 + k)


def test_padded_batch_logits_equal_transformers_with_an_attention_mask(nb05, small, ragged):
    model, ref, cfg = small
    prompts = ragged([3, 7, 12, 20], seed=2)
    ids, start = nb05.left_pad(prompts, 257, cfg["context_length"])
    assert start.tolist() == [17, 13, 8, 0] and all(torch.equal(r[n:], p) for r, n, p in zip(ids, start, prompts))
    mask = (torch.arange(20) >= start[:, None]).long()
    next_tokens = torch.tensor([[5], [6], [7], [8]])
    model.setup_kv_cache(4, 21)
    with torch.no_grad():
        ours = [model(ids, torch.arange(20), start)[:, -1], model(next_tokens, torch.tensor([20]), start)[:, -1]]
        ids, mask = torch.cat([ids, next_tokens], dim=1), torch.cat([mask, torch.ones(4, 1, dtype=torch.long)], dim=1)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # what transformers.generate derives from the mask
        theirs = ref(ids, attention_mask=mask, position_ids=position_ids).logits
    assert (ours[0] - theirs[:, 19]).abs().max().item() <= 1e-5
    assert (ours[1] - theirs[:, 20]).abs().max().item() <= 1e-5
    assert torch.isfinite(ours[0]).all()  # the padding's rows of the mask are not empty: no NaN
    # and each row equals its prompt alone, without padding
    with torch.no_grad():
        for i, p in enumerate(prompts):
            alone = model(torch.cat([p, next_tokens[i]])[None])[0, -1]
            assert (ours[1][i] - alone).abs().max().item() <= 1e-5


@pytest.mark.parametrize("prompts, kwargs, message", [
    ([], {}, r"^the list of prompts is empty$"),
    ([torch.tensor([1, 2]), torch.tensor([], dtype=torch.long)], {},
     r"^prompt 1 of the list: the prompt has 0 tokens: give 1 to 256 \(the context length\)$"),
    ([torch.tensor([[1, 2]])], {}, r"^prompt 0 of the list: it must be a 1-D tensor of token ids, "
                                   r"got torch.Size\(\[1, 2\]\)$"),
    ([torch.tensor([1, 2]), torch.tensor([3, 300])], {}, r"^prompt 1 of the list: token ids must be in \[0, 257\), "
                                                         r"got 3 to 300; was the prompt encoded with this model's "
                                                         r"tokenizer\?$"),
    ([torch.tensor([1.0])], {}, r"^prompt 0 of the list: token ids must be integers, got torch.float32; convert "
                                r"them with .long\(\)$"),
    ([torch.zeros(3, dtype=torch.long), torch.zeros(257, dtype=torch.long)], {},
     r"^prompt 1 of the list: the prompt has 257 tokens: give 1 to 256 \(the context length\)$"),
    ([torch.zeros(3, dtype=torch.long), torch.zeros(200, dtype=torch.long), torch.zeros(9, dtype=torch.long)],
     {"max_new_tokens": 60}, r"^the longest prompt \(200 tokens\) \+ max_new_tokens \(60\) exceed the context size "
                             r"\(256\); shorten it or generate fewer tokens$"),
])
def test_ragged_generate_names_the_prompt_it_refuses(nb05, small, prompts, kwargs, message):
    model, _, cfg = small
    with pytest.raises(ValueError, match=message):
        nb05.generate(model, prompts, kwargs.get("max_new_tokens", 5), cfg["context_length"])


def test_a_list_is_read_as_prompts_of_different_lengths_and_the_model_refuses_it(nb05, small):
    model, _, cfg = small
    with pytest.raises(ValueError, match=r"^prompt 0 of the list: it must be a 1-D tensor of token ids, "
                                         r"got <class 'list'>$"):
        nb05.generate(model, [[1, 2, 3]], 5, cfg["context_length"])
    with pytest.raises(ValueError, match=r"^token ids must be a tensor \(batch, seq\), got <class 'list'>; "
                                         r"for one prompt: ids\[None\]$"):
        model([[1, 2, 3]])


def test_conversation_reuses_the_cache_and_answers_as_the_whole_dialogue_does(nb05, varied, byte_chat):
    model, _ = varied
    chat, previous_prompt = byte_chat, []
    conversation = nb05.Conversation(model, chat, max_tokens=256)
    assert len(conversation.caches) == len(model.trf_blocks) and conversation.caches[0].k.shape[:3] == (1, 2, 256)
    nb05.generate(model, torch.tensor([[1, 2, 3]]), 5)
    for question in ["hi", "and then?", "ok"]:
        models_caches = [b.att.kv_cache for b in model.trf_blocks]
        answer = conversation.ask(question, max_new_tokens=12)
        assert [b.att.kv_cache for b in model.trf_blocks] == models_caches  # the model's own caches put back
        prompt = chat.encode_dialog(conversation.messages[:-1])
        assert conversation.messages[-2:] == [{"role": "user", "content": question},
                                              {"role": "assistant", "content": answer}]
        whole = nb05.generate(model, torch.tensor([prompt]), 12, eos_id=chat.stop_ids)
        assert len(set(whole[0, len(prompt):].tolist())) >= 3  # an answer of varied tokens, not one repeated
        assert answer == chat.decode(whole[0, len(prompt):].tolist())
        assert conversation.cached[:len(prompt)] == prompt
        # the earlier prompt was in the cache: at most the rest ran through the model
        assert conversation.prefilled[-1] <= len(prompt) - len(previous_prompt)
        previous_prompt = prompt
        nb05.generate(model, torch.tensor([[1, 2, 3]]), 5)  # a generate call in between uses the model's own cache
    assert conversation.prefilled[0] == len(chat.encode_dialog(conversation.messages[:1]))
    assert len(conversation.prefilled) == 3 and len(conversation.messages) == 6


def test_conversation_with_a_system_message_and_an_answer_cut_by_eos(nb05, varied, byte_chat, an_eos):
    """The answer of a turn that ends at an end id (not at max_new_tokens) is cached whole; the next turn
    still answers as the whole dialogue does."""
    model, _ = varied
    chat = byte_chat
    messages = [{"role": "system", "content": "be a llama"}, {"role": "user", "content": "hi"}]
    prompt = chat.encode_dialog(messages)
    free = nb05.generate(model, torch.tensor([prompt]), 16)[0, len(prompt):].tolist()
    stop, k = an_eos(free)
    chat.stop_ids = [stop]
    conversation = nb05.Conversation(model, chat, max_tokens=200, system_message="be a llama")
    assert conversation.messages == [{"role": "system", "content": "be a llama"}]
    answer = conversation.ask("hi", max_new_tokens=16)
    assert answer == chat.decode(free[:k]) and conversation.cached == prompt + free[:k]
    second = conversation.ask("more", max_new_tokens=8)
    prompt = chat.encode_dialog(conversation.messages[:-1])
    whole = nb05.generate(model, torch.tensor([prompt]), 8, eos_id=chat.stop_ids)
    assert second == chat.decode(whole[0, len(prompt):].tolist())


def test_sampled_conversation_repeats_with_the_seed(nb05, varied, byte_chat):
    model, _ = varied
    answers = []
    for _ in range(2):
        torch.manual_seed(3)
        conversation = nb05.Conversation(model, byte_chat, max_tokens=128)
        answers.append([conversation.ask(q, 8, temperature=1.0, top_k=20, top_p=0.9) for q in ("hi", "ok")])
    assert answers[0] == answers[1]


def test_conversation_refusals(nb05, varied, byte_chat):
    model, _ = varied
    conversation = nb05.Conversation(model, byte_chat, max_tokens=256)
    conversation.ask("hi", max_new_tokens=4)
    state = (list(conversation.messages), list(conversation.cached), list(conversation.prefilled))
    with pytest.raises(ValueError, match=r"^the conversation \(\d+ tokens\) \+ max_new_tokens \(250\) exceeds its "
                                         r"max_tokens \(256\): start a new Conversation or generate fewer$"):
        conversation.ask("more", max_new_tokens=250)
    with pytest.raises(ValueError, match=r"^temperature must be >= 0 \(0: greedy\), got -1.0$"):
        conversation.ask("more", max_new_tokens=4, temperature=-1.0)
    with pytest.raises(ValueError, match=r"^top_p must be None or in \(0, 1\], got 2.0$"):
        conversation.ask("more", max_new_tokens=4, temperature=1.0, top_p=2.0)
    assert (conversation.messages, conversation.cached, conversation.prefilled) == state  # nothing changed
    larger = nb05.Conversation(model, byte_chat, max_tokens=300)  # more slots than the model's 256 positions
    with pytest.raises(ValueError, match=r"^the prompt \(\d+ tokens\) \+ max_new_tokens \(250\) exceed the context "
                                         r"size \(256\); shorten it or generate fewer tokens$"):
        larger.ask("hi", max_new_tokens=250)


def test_an_interrupted_turn_gives_the_model_its_caches_back(nb05, varied, byte_chat, monkeypatch):
    """A reader stops a long answer (KeyboardInterrupt; here an exception from the prefill's step): the model gets its
    own caches back, so that a generate call afterwards does not overwrite the conversation's, and the next
    turn still answers as the whole dialogue does."""
    model, _ = varied
    conversation = nb05.Conversation(model, byte_chat, max_tokens=256)
    conversation.ask("hi", max_new_tokens=12)
    nb05.generate(model, torch.tensor([[1, 2, 3]]), 5)
    own = [b.att.kv_cache for b in model.trf_blocks]

    class Interrupted(Exception):
        pass

    def interrupted(*args, **kwargs):
        raise Interrupted

    try:
        monkeypatch.setattr(nb05, "decode_one_token", interrupted)  # the prefill
        with pytest.raises(Interrupted):
            conversation.ask("and then?", max_new_tokens=12)
        monkeypatch.undo()
        assert [b.att.kv_cache for b in model.trf_blocks] == own
        nb05.generate(model, torch.tensor([[7, 9, 11, 13] * 10]), 30)
        answer = conversation.ask("and then?", max_new_tokens=12)
        prompt = byte_chat.encode_dialog(conversation.messages[:-1])
        whole = nb05.generate(model, torch.tensor([prompt]), 12, eos_id=byte_chat.stop_ids)
        assert answer == byte_chat.decode(whole[0, len(prompt):].tolist())
    finally:
        for b, c in zip(model.trf_blocks, own):  # (the model is shared with other tests)
            b.att.kv_cache = c


@pytest.mark.parametrize("n_layers", [1, 2])
def test_transformers_reference_of_the_first_blocks_of_a_gguf_file_with_rope_scaling(nb05, llama32_gguf, n_layers):
    """Appendix C's reference for a large model: transformers' model of a Llama 3.2 GGUF file (llama.cpp's layout,
    RoPE divisors) cut to its first blocks equals ours cut the same way, on a prompt long enough for the scaling to
    matter; given the unscaled frequencies instead of the file's, it does not: the check can fail."""
    path, _ = llama32_gguf
    model, tokenizer, cfg = nb05.load_gguf(path)
    reference = nb05.transformers_reference(path, cfg, n_layers)
    assert len(reference.model.layers) == n_layers
    with torch.device("meta"):
        ours = nb05.Llama3Model({**cfg, "n_layers": n_layers})
    ours.load_state_dict({k: v for k, v in model.state_dict().items()
                          if not k.startswith("trf_blocks.") or int(k.split(".")[1]) < n_layers}, assign=True)
    ours.out_head.weight = ours.tok_emb.weight
    idx = torch.tensor([tokenizer.encode("Llamas are domesticated South American camelids. " * 30, bos=True)])
    with torch.inference_mode():
        assert (ours(idx) - reference(idx).logits).abs().max().item() <= 1e-4
        head_dim = cfg["emb_dim"] // cfg["n_heads"]
        reference.model.rotary_emb.inv_freq = 1.0 / cfg["rope_base"] ** (torch.arange(0, head_dim, 2).float() / head_dim)
        assert (ours(idx) - reference(idx).logits).abs().max().item() > 0.1
