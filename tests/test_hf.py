"""llmcourse.hf: the HF GPT-2 reference helpers, checked on the course's fallback modules."""

from __future__ import annotations

import pytest
import torch
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP, GPT2Attention, GPT2Block

from llmcourse.fallbacks.feed_forward import MLP
from llmcourse.fallbacks.multi_head_attention import CausalSelfAttention, GPTConfig
from llmcourse.hf import (
    copy_from_hf,
    gpt2_config,
    hf_state_dict_to_ours,
    is_conv1d_weight,
    our_state_dict_to_hf,
    run_hf_attention,
)

CONFIG = GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=4, n_embd=32)


def test_conv1d_weights_are_recognised():
    assert is_conv1d_weight("transformer.h.0.attn.c_attn.weight")
    assert is_conv1d_weight("mlp.c_fc.weight") and is_conv1d_weight("c_proj.weight")
    assert not is_conv1d_weight("h.0.attn.c_attn.bias")
    assert not is_conv1d_weight("transformer.wte.weight") and not is_conv1d_weight("lm_head.weight")


def test_config_mirrors_ours_and_prints_nothing(capfd):
    hf = gpt2_config(CONFIG)
    assert (hf.n_embd, hf.n_head, hf.n_layer, hf.n_positions, hf.vocab_size) == (32, 4, 2, 16, 50)
    assert hf.activation_function == "gelu_new" and hf.layer_norm_epsilon == 1e-5
    assert hf.eos_token_id == 49
    assert capfd.readouterr() == ("", "")
    with pytest.raises(ValueError, match="always has biases"):
        gpt2_config(GPTConfig(n_embd=8, n_head=2, bias=False))


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_attention_parity_through_copied_weights(impl):
    gen = torch.Generator().manual_seed(0)
    hf = GPT2Attention(gpt2_config(CONFIG, attn_implementation=impl), layer_idx=0).eval()
    ours = copy_from_hf(CausalSelfAttention(CONFIG), hf).eval()
    x = torch.randn(2, 7, 32, generator=gen)
    torch.testing.assert_close(ours(x), run_hf_attention(hf, x), atol=1e-6, rtol=1e-5)


def test_state_dict_round_trip_and_layout():
    hf = GPT2Block(gpt2_config(CONFIG), layer_idx=0)
    state = hf.state_dict()
    ours = hf_state_dict_to_ours(state)
    assert ours["attn.c_attn.weight"].shape == (96, 32)  # nn.Linear: (out, in)
    assert state["attn.c_attn.weight"].shape == (32, 96)  # Conv1D: (in, out)
    back = our_state_dict_to_hf(ours)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_copy_names_what_does_not_fit():
    hf = GPT2MLP(4 * 32, gpt2_config(CONFIG))
    with pytest.raises(KeyError, match="ours lacks"):
        copy_from_hf(CausalSelfAttention(CONFIG), hf)
    small = GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=4, n_embd=16)
    with pytest.raises(ValueError, match=r"c_fc.weight: shape \(64, 16\), but HF GPT-2's is \(128, 32\)"):
        copy_from_hf(MLP(small), hf)
