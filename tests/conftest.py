import http.server
import json
import threading

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


@pytest.fixture
def gated_hub():
    """A Hub on 127.0.0.1 that answers every request about a meta-llama repository as the Hub answers a reader
    who has not accepted Meta's license (403, X-Error-Code: GatedRepo), and every other request with a server
    error (huggingface_hub then looks in its cache). Plain HTTP/1.1 responses, which both of huggingface_hub's
    HTTP clients (requests before 1.0, httpx after) read. Yields its URL and the requests it saw."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self):
            seen.append((self.command, self.path))
            if "/meta-llama/" in self.path:
                repo_id = "meta-llama/" + self.path.split("/meta-llama/")[1].split("/")[0]
                status, headers = 403, {"X-Error-Code": "GatedRepo",
                                        "X-Error-Message": f"Access to model {repo_id} is restricted."}
            else:
                status, headers = 500, {}
            body = json.dumps({"error": headers.get("X-Error-Message", "Internal Error")}).encode()
            self.send_response(status)
            for key, value in {**headers, "Content-Type": "application/json", "Content-Length": str(len(body)),
                               "Connection": "close"}.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()
