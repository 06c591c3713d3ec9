"""The drop-in: a tiny Llama from transformers, random weights, whose model.embed_tokens becomes
tpembed.torch.ParallelEmbedding (tp 1 here, in a gloo group of one process; tp 2 under torchrun in
test_torchrun.py) gives the same logits, the same embedding gradient after a training step, and the
same again under torch.compile(fullgraph=True). Skips where transformers is not installed.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="SKIPPED: PyTorch is not installed")
transformers = pytest.importorskip("transformers", reason="SKIPPED: transformers is not installed")

import tpembed.torch as tpt  # noqa: E402

dist = torch.distributed


@pytest.fixture
def group():
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    yield dist.group.WORLD
    dist.destroy_process_group()


def tiny_llama():
    config = transformers.LlamaConfig(vocab_size=211, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    return config, transformers.LlamaForCausalLM(config)


def train_step(model, ids):
    """One SGD step on a next-token loss; returns the logits before it and the embedding's
    gradient."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    logits = model(input_ids=ids, use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    gradient = model.model.embed_tokens.weight.grad.clone()
    optimizer.step()
    return logits.detach(), gradient


def test_tiny_llama_with_a_tpembed_embedding_trains_identically(group):
    config, reference = tiny_llama()
    _, model = tiny_llama()
    model.load_state_dict(reference.state_dict())
    model.model.embed_tokens = tpt.ParallelEmbedding(model.model.embed_tokens.weight)
    ids = torch.randint(0, config.vocab_size, (2, 13), generator=torch.Generator().manual_seed(1))
    logits, gradient = train_step(model, ids)
    expected_logits, expected_gradient = train_step(reference, ids)
    assert torch.equal(logits, expected_logits)
    torch.testing.assert_close(gradient, expected_gradient, atol=1e-7, rtol=1e-5)
    # After the step both read their updated tables.
    after = model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(after, reference(input_ids=ids, use_cache=False).logits)


def test_tiny_llama_compiles_fullgraph_with_the_tpembed_embedding(group):
    torch._dynamo.reset()
    config, model = tiny_llama()
    eager_logits = None
    ids = torch.randint(0, config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(2))
    model.model.embed_tokens = tpt.ParallelEmbedding(model.model.embed_tokens.weight)
    eager_logits = model(input_ids=ids, use_cache=False).logits
    compiled = torch.compile(model, fullgraph=True)  # inductor
    torch.testing.assert_close(compiled(input_ids=ids, use_cache=False).logits, eager_logits)
