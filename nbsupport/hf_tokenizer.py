"""The tokenizer and chat format of a model whose folder has Hugging Face's tokenizer files instead of Meta's
`original/tokenizer.model`: SmolLM2-135M-Instruct, which notebook 04 loads where Meta's repository is gated.
They have the interface of notebook 04's `Tokenizer` and `ChatFormat`, on transformers' tokenizer and the
model's own chat template."""

from transformers import AutoTokenizer


class HubTokenizer:
    """`tokenizer.json` of `folder`: encode(text, bos), decode(ids), special_tokens, bos_id, eos_id, eot_id."""

    def __init__(self, folder):
        self.hf = AutoTokenizer.from_pretrained(folder)
        self.special_tokens = {t: self.hf.convert_tokens_to_ids(t) for t in self.hf.all_special_tokens}
        plain = self.hf.encode("a", add_special_tokens=False)
        self.prefix = self.hf.encode("a")[:-len(plain)]  # what the tokenizer puts first (a BOS id), [] for SmolLM2
        self.bos_id = self.prefix[0] if self.prefix else None
        self.eos_id = self.eot_id = self.hf.eos_token_id  # SmolLM2-Instruct: <|im_end|> ends the text and the turn

    def encode(self, text, bos=False):
        return self.prefix * bos + self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids):
        return self.hf.decode(list(ids))


class TemplateChatFormat:
    """Notebook 04's ChatFormat (encode(user_message, system_message), decode(ids)) by the model's chat template."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def encode(self, user_message, system_message=None):
        messages = [{"role": "system", "content": system_message}] * bool(system_message)
        messages.append({"role": "user", "content": user_message})
        text = self.tokenizer.hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer.hf.encode(text, add_special_tokens=False)

    def decode(self, ids):
        return self.tokenizer.decode(ids)


def tokenizer_for(folder, tokenizer, chat):
    """(tokenizer, chat format) of the model in `folder`: the given ones (Meta's) where it has
    original/tokenizer.model, else those of its tokenizer.json and chat template."""
    if (folder / "original" / "tokenizer.model").exists():
        return tokenizer, chat
    hub_tokenizer = HubTokenizer(folder)
    return hub_tokenizer, TemplateChatFormat(hub_tokenizer)
