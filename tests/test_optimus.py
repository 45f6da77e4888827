"""Optimus text VAE: fixture tokenisation and texts, key table, tiny-model sampling, text post-processing."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import parity_dir

from codi.keymaps.optimus import OFFICIAL_PREFIX, OPTIMUS_MAP
from codi.loading import (
    CheckpointKeyError,
    ComponentMap,
    check_against_module,
    convert_official_state_dict,
    load_official_component,
)
from codi.models.optimus import (
    BOS_ID,
    EOS_ID,
    OPTIMUS_PRESETS,
    OptimusConfig,
    OptimusVAE,
    clean_up_tokenization,
    detokenize,
    draw,
)
from codi.text_postprocess import postprocess_text, remove_adjacent_duplicate_words, remove_repeated_ngrams


def _fixture() -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    folder = parity_dir()
    return json.loads((folder / "optimus.json").read_text()), load_file(str(folder / "optimus.safetensors"))


@pytest.fixture(scope="module")
def fixture_model() -> tuple[dict, dict[str, torch.Tensor], OptimusVAE]:
    from codi.parity.optimus import build

    spec, tensors = _fixture()
    weights = {k: v for k, v in tensors.items() if not k.startswith(("output.", "debug."))}
    return spec, tensors, build(spec, weights)


def _tiny() -> OptimusVAE:
    torch.manual_seed(0)
    cfg = OptimusConfig.from_dict({**OPTIMUS_PRESETS["tiny"].__dict__, "latent_size": 16})
    return OptimusVAE(cfg).eval()


@pytest.fixture(scope="module")
def tiny() -> OptimusVAE:
    return _tiny()


def test_fixture_tokenization(fixture_model) -> None:
    spec, tensors, model = fixture_model
    assert torch.equal(model.tokenize_for_encoder(spec["strings"]), tensors["input.encoder_token_ids"])
    # the strings path equals the ids path
    assert torch.equal(model.encode(spec["strings"]), model.encode(tensors["input.encoder_token_ids"]))


def test_fixture_sampled_text(fixture_model) -> None:
    spec, tensors, model = fixture_model
    for seed, texts in spec["sampled_text"].items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            got = model.decode(tensors["input.z_text"], official_sampling=True, postprocess=False)
        assert got == texts
    # the CoDi post-processing removes the stutter of the recorded samples
    assert postprocess_text(spec["sampled_text"]["0"][1]).endswith("Flexcare Pearson")


def test_fixture_cached_sampler_equals_official_per_row(fixture_model) -> None:
    _, tensors, model = fixture_model
    z = tensors["input.z_text"] / model.scale_factor
    for row in range(z.shape[0]):
        slow = model.sample_ids_official(z[row : row + 1], generator=torch.Generator().manual_seed(3))
        fast = model.sample_ids(z[row : row + 1], generator=torch.Generator().manual_seed(3))
        assert fast == slow


def test_dropped_causal_mask_is_plain_tril() -> None:
    _, tensors = _fixture()
    masks = [v for k, v in tensors.items() if k.endswith(".attn.bias")]
    assert masks
    for mask in masks:
        n = mask.shape[-1]
        assert torch.equal(mask, torch.tril(torch.ones(n, n)).view(1, 1, n, n))


def test_tied_lm_head_must_equal_wte(fixture_model) -> None:
    _, tensors, model = fixture_model
    assert model.decoder.lm_head.weight is model.decoder.transformer.wte.weight
    weights = {k: v.float() for k, v in tensors.items() if k.startswith(OFFICIAL_PREFIX)}
    weights["optimus.decoder.lm_head.weight"] = weights["optimus.decoder.lm_head.weight"] + 1
    with pytest.raises(CheckpointKeyError, match="lm_head"):
        load_official_component(model, weights, OPTIMUS_MAP)


def test_full_size_key_coverage() -> None:
    rows = [line.split("\t") for line in (parity_dir() / "official_state_dict_keys.tsv").read_text().splitlines()]
    official = {
        key: torch.empty(json.loads(shape), device="meta")
        for key, shape, _ in rows[1:]
        if key.startswith(OFFICIAL_PREFIX)
    }
    assert len(official) == 363
    with torch.device("meta"):
        model = OptimusVAE(OptimusConfig.official())
    ours = convert_official_state_dict(official, [ComponentMap(OFFICIAL_PREFIX, "", OPTIMUS_MAP.rules)])
    check_against_module(ours, model)


def test_config_from_fixture_dict_and_official() -> None:
    spec = {
        "encoder": {"vocab_size": 28996, "hidden_size": 32, "architectures": ["BertForMaskedLM"]},
        "encoder_latent_size": 24,
        "decoder": {"vocab_size": 50260, "n_embd": 32, "n_ctx": 64, "latent_size": 24},
        "latent_as_gpt_emb": True,
        "latent_as_gpt_memory": False,
    }
    cfg = OptimusConfig.from_dict(spec)
    assert cfg.latent_size == 24 and cfg.encoder == {"vocab_size": 28996, "hidden_size": 32}
    assert cfg.decoder == {"vocab_size": 50260, "n_embd": 32} and not cfg.latent_as_gpt_memory
    with pytest.raises(ValueError, match="latent"):
        OptimusConfig.from_dict({**spec, "encoder_latent_size": 16})
    official = OptimusConfig.official()
    assert (official.latent_size, official.scale_factor, official.max_length) == (768, 4.3108, 30)
    assert official.gpt2_config().n_positions == 1024 and official.bert_config().hidden_size == 768


def test_tiny_shapes_and_latent_use(tiny: OptimusVAE) -> None:
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[BOS_ID, 40, 716], [BOS_ID, 11, 13]])
    with torch.no_grad():
        logits = tiny.decoder_logits(ids, z)
        assert logits.shape == (2, 3, 50260)
        assert tiny.encode(["A Cat.", "two words here"]).shape == (2, 16)
        # the latent reaches every position (memory and embedding); the first row does not see the second
        other = tiny.decoder_logits(ids, torch.stack([z[0], -z[1]]))
        assert torch.allclose(other[0], logits[0]) and not torch.allclose(other[1], logits[1])
        # causal: the first token's logits do not depend on later tokens
        ids2 = ids.clone()
        ids2[:, 2] = 5
        assert torch.allclose(tiny.decoder_logits(ids2, z)[:, :2], logits[:, :2], atol=1e-6)


def test_tiny_sampling_is_seeded_and_stops_at_eos(tiny: OptimusVAE) -> None:
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(2))
    a = tiny.sample_ids(z, generator=torch.Generator().manual_seed(7), max_length=12)
    b = tiny.sample_ids(z, generator=torch.Generator().manual_seed(7), max_length=12)
    assert a == b
    assert all(r[0] == BOS_ID and r[-1] == EOS_ID and EOS_ID not in r[1:-1] and len(r) <= 12 for r in a)

    # a model that emits <EOS> with probability ~0.15 per step, so rows stop at different steps
    eos_model = _tiny()
    with torch.no_grad():
        eos_model.decoder.transformer.ln_f.bias.fill_(1.0)  # ln_f output sums to n_embd
        eos_model.decoder.transformer.wte.weight[EOS_ID] = 0.28  # EOS logit ~ 9 vs ~50k logits ~ 0
    fast = eos_model.sample_ids(z, generator=torch.Generator().manual_seed(4), max_length=30)
    assert len({len(r) for r in fast}) > 1
    assert all(r[0] == BOS_ID and r[-1] == EOS_ID and EOS_ID not in r[1:-1] for r in fast)
    for i in range(3):  # one row: the cached sampler draws exactly like the official one
        one = eos_model.sample_ids(z[i : i + 1], generator=torch.Generator().manual_seed(i))
        assert one == eos_model.sample_ids_official(z[i : i + 1], generator=torch.Generator().manual_seed(i))
    texts = eos_model.decode(z * eos_model.scale_factor, generator=torch.Generator().manual_seed(4))
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)


def test_detokenize_like_optimus_tokenizer() -> None:
    # added tokens get a space before them only; clean-up removes spaces before punctuation
    assert detokenize([BOS_ID, 40, 716, 257, 3797, 764, 50259]) == " <BOS>I am a cat. <EOS>"
    assert detokenize([BOS_ID, 314, 716, EOS_ID]).split()[1:-1] == ["I", "am"]
    assert clean_up_tokenization("I do not know , it 's fine !") == "I don't know, it's fine!"


def test_postprocess_text() -> None:
    assert remove_adjacent_duplicate_words("a  a b b a") == "a b a"
    assert remove_repeated_ngrams("a cat sat on the mat on the mat.") == "a cat sat on the mat."
    assert remove_repeated_ngrams("the cat, the cat, is here") == "the cat, is here"
    assert remove_repeated_ngrams("a b a b a b c") == "a b c"
    assert remove_repeated_ngrams("e.g. the U.S. is big") == "e.g. the U.S. is big"
    assert postprocess_text("Feeling Feeling Feeling talented  gaps") == "Feeling talented gaps"
    assert postprocess_text("") == ""


def test_draw_is_torch_multinomial_on_the_generators_device() -> None:
    """On one device `draw` is torch.multinomial itself (the official sampler's token stream is kept); without a
    generator it uses the global RNG. The case it exists for, CUDA probabilities with the pipeline's CPU generator
    (which torch.multinomial refuses), runs in tests/test_cuda.py."""
    probs = torch.rand(4, 50, generator=torch.Generator().manual_seed(0)).softmax(-1)  # [4, V]
    ours = draw(probs, torch.Generator().manual_seed(5))
    assert ours.shape == (4, 1) and torch.equal(
        ours, torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(5))
    )
    torch.manual_seed(9)
    first = draw(probs[0], None)
    torch.manual_seed(9)
    assert first.shape == (1,) and torch.equal(first, torch.multinomial(probs[0], 1))
