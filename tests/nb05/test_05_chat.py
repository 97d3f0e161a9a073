"""Notebook 05, section 7: streaming (generate(..., stream=True) and stream_text) and the chat formats, against
Meta's chat format of Llama 3 and transformers' chat templates."""

import pytest
import torch


def test_generate_stream_yields_the_tokens_of_generate(nb05, varied, an_eos, varied_step):
    model, cfg = varied
    prompt = torch.tensor([[4, 8, 15, 16, 23]])
    greedy = nb05.generate(model, prompt, 20)[0, 5:].tolist()
    stream = nb05.generate(model, prompt, 20, stream=True)
    assert not isinstance(stream, (list, torch.Tensor)) and iter(stream) is stream  # a generator
    assert list(stream) == greedy
    eos, k = an_eos(greedy)
    assert list(nb05.generate(model, prompt, 20, eos_id=[999, eos], stream=True)) == greedy[:k]
    assert list(nb05.generate(model, prompt, 20, eos_id=eos, stream=True)) == greedy[:k]
    torch.manual_seed(0)
    sampled = nb05.generate(model, prompt, 20, temperature=1.5, top_k=50, top_p=0.9)[0, 5:].tolist()
    torch.manual_seed(0)
    assert list(nb05.generate(model, prompt, 20, temperature=1.5, top_k=50, top_p=0.9, stream=True)) == sampled
    assert list(nb05.generate(model, prompt, 20, decode_step=varied_step, stream=True)) == greedy
    assert list(nb05.generate(model, [prompt[0]], 20, stream=True)) == greedy  # a list of one prompt
    assert list(nb05.generate(model, prompt, 0, stream=True)) == []


def test_generate_stream_refuses_a_batch_and_a_prompt_too_long_when_called(nb05, varied):
    """The refusals come from the call itself, not from the first next() of the generator."""
    model, _ = varied
    prompt = torch.tensor([[4, 8, 15, 16, 23]])
    with pytest.raises(ValueError, match=r"^stream=True takes one prompt, shape \(1, t\), got \(2, 5\)$"):
        nb05.generate(model, prompt.repeat(2, 1), 3, stream=True)
    with pytest.raises(ValueError, match=r"^stream=True takes one prompt, shape \(1, t\), got \(2, 5\)$"):
        nb05.generate(model, [prompt[0], prompt[0, :3]], 3, stream=True)
    with pytest.raises(ValueError, match=r"^the prompt \(5 tokens\) \+ max_new_tokens \(252\) exceed the context "
                                         r"size \(256\); shorten it or generate fewer tokens$"):
        nb05.generate(model, prompt, 252, stream=True)
    with pytest.raises(ValueError, match=r"^top_p must be None or in \(0, 1\], got 0$"):
        nb05.generate(model, prompt, 3, temperature=1.0, top_p=0, stream=True)


def test_stream_text_holds_back_split_characters(nb05, llama3_tokenizer):
    tokenizer = llama3_tokenizer
    for text in ["Llamas 🦙 and alpacas", "東京 and Москва, naïve café", "👩‍💻 codes"]:
        ids = tokenizer.encode(text)
        pieces = list(nb05.stream_text(ids, tokenizer))
        assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
        assert list(nb05.stream_text(iter(ids), tokenizer)) == pieces  # any iterable of ids, a generator too
    assert "".join(tokenizer.decode([t]) for t in tokenizer.encode("🦙")) != "🦙"  # why stream_text is needed
    assert list(nb05.stream_text([tokenizer.encode("🦙")[0]], tokenizer)) == ["\ufffd"]  # cut off: replaced at the end
    assert list(nb05.stream_text([], tokenizer)) == []


def test_chat_formats_encode_a_dialogue_as_their_single_question(nb05, llama3_tokenizer):
    tokenizer = llama3_tokenizer
    chat = nb05.ChatFormat(tokenizer)
    assert chat.encode_dialog([{"role": "user", "content": "Hi"}]) == chat.encode("Hi")
    two = chat.encode_dialog([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                              {"role": "user", "content": "Bye"}])
    eot = tokenizer.special_tokens["<|eot_id|>"]
    assert two[:len(chat.encode("Hi"))] == chat.encode("Hi")
    assert tokenizer.decode(two[len(chat.encode("Hi")):]) == ("Hello!<|eot_id|><|start_header_id|>user<|end_header_id|>"
                                                             "\n\nBye<|eot_id|><|start_header_id|>assistant"
                                                             "<|end_header_id|>\n\n")
    assert two.count(eot) == 3  # the end of each of the three messages
    assert chat.decode(chat.encode(" Hi \n", system_message="Be brief.")) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user"
        "<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")  # content stripped
    assert [chat.decode([i]) for i in chat.stop_ids] == ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]
    assert isinstance(nb05.chat_format(tokenizer), nb05.ChatFormat)


def test_llama3_chat_format_equals_metas(nb05, llama3_tokenizer):
    """Meta's own ChatFormat (llama_models) encodes the same dialogue to the same ids."""
    meta_chat = pytest.importorskip("llama_models.llama3.chat_format")
    from llama_models.datatypes import RawMessage, StopReason
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    meta = meta_chat.ChatFormat(MetaTokenizer.get_instance())
    dialog = [("system", "Be brief."), ("user", "What do llamas eat?"), ("assistant", "Grass and hay."),
              ("user", "And alpacas? 🦙")]
    messages = [RawMessage(role=role, content=content, stop_reason=StopReason.end_of_turn) if role == "assistant"
                else RawMessage(role=role, content=content) for role, content in dialog]
    theirs = meta.encode_dialog_prompt(messages).tokens
    ours = nb05.ChatFormat(llama3_tokenizer).encode_dialog([{"role": r, "content": c} for r, c in dialog])
    assert ours == theirs


def test_chat_format_of_a_llama32_gguf_file(nb05, llama32_gguf):
    path, _ = llama32_gguf
    _, tokenizer, _ = nb05.load_gguf(path)
    chat = nb05.chat_format(tokenizer)
    assert type(chat) is nb05.ChatFormat
    assert chat.decode(chat.encode("Hi!")) == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
                                               "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert [chat.decode([i]) for i in chat.stop_ids] == ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]
    assert tokenizer.eos_id in chat.stop_ids


def test_smollm2_chat_format_equals_transformers_chat_template(nb05, smollm2):
    path, ours, hf = smollm2
    chat = nb05.chat_format(ours)
    assert type(chat) is nb05.ChatMLFormat
    template = hf.apply_chat_template([{"role": "user", "content": "Hi!"}], add_generation_prompt=True, tokenize=False)
    assert chat.encode("Hi!") == hf.encode(template, add_special_tokens=False)
    for messages in ([{"role": "system", "content": "You are a llama."}, {"role": "user", "content": "Hi!"}],
                     [{"role": "user", "content": "What do llamas eat?"}, {"role": "assistant", "content": "Grass."},
                      {"role": "user", "content": "And alpacas?"}]):
        template = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert chat.encode_dialog(messages) == hf.encode(template, add_special_tokens=False), messages
    assert nb05.open_gguf(path).fields["tokenizer.ggml.eos_token_id"].contents() == hf.convert_tokens_to_ids("<|im_end|>")
    assert chat.stop_ids == [hf.convert_tokens_to_ids("<|im_end|>")]  # eos is the end of a turn


def test_chat_format_refuses_a_tokenizer_without_a_known_chat_format(nb05):
    class NoChat:
        special_tokens = {"<s>": 0, "</s>": 1}

    with pytest.raises(ValueError, match=r"^unknown chat format: the tokenizer has neither Llama 3's headers nor "
                                         r"ChatML's <\|im_start\|>$"):
        nb05.chat_format(NoChat())
