"""Optimus text VAE: CoDi's text latent space (BERT encoder -> 768-d latent -> GPT-2 decoder).

Wraps transformers' `BertModel` and `GPT2LMHeadModel` and adds only Optimus' deltas: the encoder's
`linear` head (pooled [CLS] -> mu, logvar), and the decoder's `transformer.linear` (latent -> one past
key/value slot per layer) and `transformer.linear_emb` (latent added to every token embedding). Attribute
paths follow the official checkpoint (`optimus.encoder.*`, `optimus.decoder.*`), so loading is a near
identity key table (codi/keymaps/optimus.py). Spec: official-codi-spec.md sections 1.4 and 4.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import BertConfig, BertModel, BertTokenizer, DynamicCache, GPT2Config, GPT2LMHeadModel
from transformers import GPT2Tokenizer as _GPT2Tokenizer

from codi.text_postprocess import postprocess_text

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "tokenizers"
GPT2_VOCAB = 50257  # byte-level BPE ids 0..50256; Optimus adds three tokens after them
ADDED_TOKENS: dict[int, str] = {50257: "<PAD>", 50258: "<BOS>", 50259: "<EOS>"}
BOS_ID, EOS_ID = 50258, 50259
BERT_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
)
GPT2_KEYS = (
    "vocab_size",
    "n_embd",
    "n_layer",
    "n_head",
    "n_positions",
    "n_inner",
    "activation_function",
    "layer_norm_epsilon",
)


@dataclass
class OptimusConfig:
    """Sizes of the Optimus VAE: BERT encoder kwargs, GPT-2 decoder kwargs, latent size and scale."""

    encoder: dict[str, Any]  # transformers BertConfig kwargs
    decoder: dict[str, Any]  # transformers GPT2Config kwargs
    latent_size: int = 768
    latent_as_gpt_emb: bool = True
    latent_as_gpt_memory: bool = True
    scale_factor: float = 4.3108  # official text_scale_factor: diffusion latent = mu * scale_factor
    max_length: int = 30  # decode cap in tokens, <BOS> and <EOS> included

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> OptimusConfig:
        """Accepts the parity fixture's config (official optimus_vae arguments) or our own fields."""
        enc, dec = dict(cfg["encoder"]), dict(cfg["decoder"])
        latent = int(cfg.get("latent_size", cfg.get("encoder_latent_size", dec.get("latent_size", 768))))
        if int(dec.get("latent_size", latent)) != latent:
            raise ValueError(f"encoder latent {latent} != decoder latent {dec['latent_size']}")
        known = {f for f in cls.__dataclass_fields__ if f not in ("encoder", "decoder")}
        return cls(
            encoder={k: enc[k] for k in BERT_KEYS if k in enc},
            decoder={k: dec[k] for k in GPT2_KEYS if k in dec},
            latent_size=latent,
            **{k: cfg[k] for k in known if k in cfg and k != "latent_size"},
        )

    @classmethod
    def official(cls) -> OptimusConfig:
        """BERT-base-cased + GPT-2 small with the 3 added tokens, 768-d latent (CoDi's Optimus)."""
        return copy.deepcopy(OPTIMUS_PRESETS["official"])

    def bert_config(self) -> BertConfig:
        return BertConfig(**self.encoder)

    def gpt2_config(self) -> GPT2Config:
        # bos/eos are Optimus' added tokens (the GPT-2 default 50256 is a plain token here)
        return GPT2Config(**self.decoder, bos_token_id=BOS_ID, eos_token_id=EOS_ID)


OPTIMUS_PRESETS: dict[str, OptimusConfig] = {
    "official": OptimusConfig(
        encoder=dict(
            vocab_size=28996,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            hidden_act="gelu",
            max_position_embeddings=512,
            type_vocab_size=2,
            layer_norm_eps=1e-12,
        ),
        decoder=dict(vocab_size=50260, n_embd=768, n_layer=12, n_head=12, n_positions=1024, layer_norm_epsilon=1e-5),
    ),
    "tiny": OptimusConfig(
        encoder=dict(
            vocab_size=28996,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        ),
        decoder=dict(vocab_size=50260, n_embd=32, n_layer=2, n_head=2, n_positions=64),
    ),
}


@dataclass
class OptimusPosterior:
    """The encoder's Gaussian posterior over the (unscaled) latent, and the pooled BERT feature it came from."""

    mu: Tensor  # [B, latent]
    logvar: Tensor  # [B, latent]
    pooled: Tensor  # [B, hidden]


def draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """`torch.multinomial(probs, 1, generator=generator)` with the draw made on the generator's device: torch refuses
    a CPU generator for CUDA probabilities, and the pipeline's seeded generators are CPU ones (the same seed gives
    the same tokens from the same probabilities on any device). [..., V] -> [..., 1] on probs' device."""
    if generator is not None and generator.device != probs.device:
        return torch.multinomial(probs.to(generator.device), 1, generator=generator).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)


@functools.cache
def bert_tokenizer() -> BertTokenizer:
    """The encoder's BERT-base-cased WordPiece tokenizer (case kept; CoDi lower-cases the text itself)."""
    lines = (TOKENIZER_DIR / "bert-base-cased-vocab.txt").read_text(encoding="utf-8").split("\n")
    vocab = {tok: i for i, tok in enumerate(lines[:-1] if lines[-1] == "" else lines)}
    return BertTokenizer(vocab=vocab, do_lower_case=False)


@functools.cache
def gpt2_tokenizer() -> _GPT2Tokenizer:
    """The decoder's GPT-2 byte-level BPE tokenizer plus <PAD>, <BOS>, <EOS> as ids 50257..50259."""
    vocab = json.loads((TOKENIZER_DIR / "gpt2-vocab.json").read_text(encoding="utf-8"))
    lines = (TOKENIZER_DIR / "gpt2-merges.txt").read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#version")]
    tok = _GPT2Tokenizer(vocab=vocab, merges=merges)
    tok.add_special_tokens({"pad_token": "<PAD>", "bos_token": "<BOS>", "eos_token": "<EOS>"})
    assert tok.convert_tokens_to_ids(list(ADDED_TOKENS.values())) == list(ADDED_TOKENS)
    return tok


def clean_up_tokenization(text: str) -> str:
    """The pytorch-transformers 1.x clean-up Optimus' tokenizer applies (spaces before punctuation etc.)."""
    for old, new in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" do not", " don't"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(old, new)
    return text


def detokenize(ids: Sequence[int]) -> str:
    """GPT-2 ids -> text like Optimus' tokenizer: runs of BPE ids decoded as bytes, each added token as
    " <TOKEN>" (a space before, none after), then `clean_up_tokenization`."""
    tok, parts, run = gpt2_tokenizer(), [], []
    for i in ids:
        if i in ADDED_TOKENS:
            if run:
                parts.append(tok.decode(run, clean_up_tokenization_spaces=False))
                run = []
            parts.append(" " + ADDED_TOKENS[i])
        else:
            run.append(i)
    if run:
        parts.append(tok.decode(run, clean_up_tokenization_spaces=False))
    return clean_up_tokenization("".join(parts))


class OptimusBertEncoder(BertModel):
    """BERT with pooler plus Optimus' `linear` head mapping the pooled [CLS] feature to (mu, logvar)."""

    def __init__(self, config: BertConfig, latent_size: int) -> None:
        super().__init__(config, add_pooling_layer=True)
        self.linear = nn.Linear(config.hidden_size, 2 * latent_size, bias=False)

    def posterior(self, input_ids: Tensor) -> OptimusPosterior:
        """Args: input_ids [B, L] (0 = padding, masked out). Returns: mu, logvar [B, latent]; pooled [B, H]."""
        pooled = self(input_ids=input_ids, attention_mask=(input_ids > 0).long()).pooler_output  # [B, H]
        mu, logvar = self.linear(pooled).chunk(2, dim=-1)  # [B, latent] x2
        return OptimusPosterior(mu=mu, logvar=logvar, pooled=pooled)


class OptimusGPT2Decoder(GPT2LMHeadModel):
    """GPT-2 LM (lm_head tied to wte) whose `transformer` also holds the latent projections `linear`
    (latent -> one past key/value slot per layer) and `linear_emb` (latent -> an offset on every token)."""

    def __init__(self, config: GPT2Config, latent_size: int, as_emb: bool = True, as_memory: bool = True) -> None:
        super().__init__(config)
        self.as_emb, self.as_memory = as_emb, as_memory
        self.transformer.linear = nn.Linear(latent_size, config.n_layer * config.n_embd, bias=False)
        self.transformer.linear_emb = nn.Linear(latent_size, config.n_embd, bias=False)

    def latent_memory(self, z: Tensor) -> DynamicCache:
        """A cache holding the latent as one already-projected key AND value per layer.

        Args: z [B, latent] (unscaled). Returns: DynamicCache with per layer (k, v) [B, heads, 1, head_dim].
        """
        cfg = self.config
        mem = self.transformer.linear(z)  # [B, n_layer * E]
        mem = mem.view(z.shape[0], cfg.n_layer, cfg.n_head, 1, cfg.n_embd // cfg.n_head)  # [B, n_layer, h, 1, d]
        return DynamicCache([(mem[:, i], mem[:, i]) for i in range(cfg.n_layer)])

    def hidden(
        self, input_ids: Tensor, z: Tensor, cache: DynamicCache | None = None
    ) -> tuple[Tensor, DynamicCache | None]:
        """Final hidden states (after ln_f) of `input_ids` conditioned on the latent.

        Args:
            input_ids: [B, L] new tokens.
            z: [B, latent] unscaled latent.
            cache: from `latent_memory` or an earlier call (it is extended in place); None starts anew.
        Returns:
            hidden [B, L, E] and the cache (None when the latent is not used as memory).
        """
        if cache is None and self.as_memory:
            cache = self.latent_memory(z)
        embeds = self.transformer.wte(input_ids)  # [B, L, E]
        if self.as_emb:
            embeds = embeds + self.transformer.linear_emb(z)[:, None]  # [B, L, E]
        past = cache.get_seq_length() if cache is not None else 0  # the latent slot counts: positions from 1
        positions = torch.arange(past, past + input_ids.shape[1], device=input_ids.device)[None]  # [1, L]
        out = self.transformer(inputs_embeds=embeds, past_key_values=cache, position_ids=positions, use_cache=True)
        return out.last_hidden_state, cache


class OptimusVAE(nn.Module):
    """CoDi's Optimus text VAE: text -> scaled 768-d latent (training) and latent -> sampled text."""

    def __init__(self, config: OptimusConfig) -> None:
        super().__init__()
        self.config = config
        self.scale_factor = config.scale_factor
        self.encoder = OptimusBertEncoder(config.bert_config(), config.latent_size)
        self.decoder = OptimusGPT2Decoder(
            config.gpt2_config(), config.latent_size, config.latent_as_gpt_emb, config.latent_as_gpt_memory
        )

    def tokenize_for_encoder(self, texts: Sequence[str]) -> Tensor:
        """Lower-cased BERT-cased WordPiece ids with [CLS] ... [SEP], right-padded with 0.

        Args: texts: B strings. Returns: LongTensor [B, L] (L <= the encoder's position table).
        """
        tok = bert_tokenizer()
        rows = [tok.encode(t.lower(), add_special_tokens=True) for t in texts]
        ids = torch.zeros(len(rows), max(map(len, rows), default=0), dtype=torch.long)  # [B, L]
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return ids[:, : self.config.encoder.get("max_position_embeddings", 512)]

    def posterior(self, texts_or_ids: Sequence[str] | Tensor) -> OptimusPosterior:
        """The encoder posterior (unscaled) of strings or of encoder ids [B, L]."""
        ids = texts_or_ids if isinstance(texts_or_ids, Tensor) else self.tokenize_for_encoder(texts_or_ids)
        return self.encoder.posterior(ids.to(self.encoder.device))

    def encode(self, texts_or_ids: Sequence[str] | Tensor) -> Tensor:
        """Deterministic latent in diffusion scale (official `optimus_encode`).

        Args: B strings or encoder ids [B, L]. Returns: mu * scale_factor [B, latent].
        """
        return self.posterior(texts_or_ids).mu * self.scale_factor

    def decoder_hidden(self, input_ids: Tensor, z_unscaled: Tensor) -> Tensor:
        """Args: input_ids [B, L]; z_unscaled [B, latent]. Returns: final hidden states [B, L, E]."""
        z = z_unscaled.to(self.decoder.dtype)
        return self.decoder.hidden(input_ids.to(z.device), z)[0]

    def decoder_logits(self, input_ids: Tensor, z_unscaled: Tensor) -> Tensor:
        """Args: input_ids [B, L]; z_unscaled [B, latent]. Returns: next-token logits [B, L, V]."""
        return self.decoder.lm_head(self.decoder_hidden(input_ids, z_unscaled))  # [B, L, V]

    @torch.no_grad()
    def sample_ids(
        self,
        z_unscaled: Tensor,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        max_length: int | None = None,
    ) -> list[list[int]]:
        """Batched multinomial sampling with a KV cache, from <BOS> to <EOS> or `max_length` tokens.

        Args:
            z_unscaled: [B, latent].
            generator: RNG for the draws (None = torch's global RNG).
            temperature: logits are divided by it (no top-k / top-p, as in CoDi).
            max_length: cap incl. <BOS> and <EOS> (default config.max_length); the last token of a capped
                sequence is forced to <EOS> like the official sampler.
        Returns:
            B id lists, each starting with <BOS> and ending with <EOS>.
        """
        max_length = max_length or self.config.max_length
        z = z_unscaled.to(self.decoder.dtype)
        batch = z.shape[0]
        step = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=z.device)  # [B, 1]
        rows, done, cache = [step], torch.zeros(batch, dtype=torch.bool, device=z.device), None
        for _ in range(max_length - 1):
            hidden, cache = self.decoder.hidden(step, z, cache)  # [B, 1, E]
            logits = self.decoder.lm_head(hidden[:, -1]).float() / temperature  # [B, V]
            step = draw(logits.softmax(-1), generator)  # [B, 1]
            step = step.masked_fill(done[:, None], EOS_ID)  # [B, 1]
            rows.append(step)
            done |= step[:, 0] == EOS_ID
            if bool(done.all()):
                break
        ids = torch.cat(rows, dim=1)  # [B, T]
        ids[~done, -1] = EOS_ID
        return [row[: row.index(EOS_ID) + 1] for row in ids.tolist()]

    @torch.no_grad()
    def sample_ids_official(
        self,
        z_unscaled: Tensor,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        max_length: int | None = None,
    ) -> list[list[int]]:
        """The official sampler: row by row, the whole prefix re-run per token (no cache), one
        `torch.multinomial(softmax(logits / T), 1)` per token. Same arguments and result as `sample_ids`;
        with the global RNG seeded its ids equal the official ones."""
        max_length = max_length or self.config.max_length
        out = []
        for zi in z_unscaled[:, None]:  # [1, latent] per row, in batch order
            seq = torch.full((1, 1), BOS_ID, dtype=torch.long, device=zi.device)  # [1, T]
            while True:
                logits = self.decoder_logits(seq, zi)[0, -1].float() / temperature  # [V]
                token = draw(logits.softmax(-1), generator)  # [1]
                seq = torch.cat([seq, token[None]], dim=1)  # [1, T+1]
                if token.item() == EOS_ID:
                    break
                if seq.shape[1] >= max_length:
                    seq[0, -1] = EOS_ID
                    break
            out.append(seq[0].tolist())
        return out

    def ids_to_text(self, ids: Sequence[int]) -> str:
        """Official detokenisation: decode, split on whitespace, drop the first and last word (<BOS>, <EOS>)."""
        return " ".join(detokenize(ids).split()[1:-1])

    def decode(
        self,
        z: Tensor,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        max_length: int | None = None,
        official_sampling: bool = False,
        postprocess: bool = True,
    ) -> list[str]:
        """Samples one sentence per latent.

        Args:
            z: [B, latent] in diffusion scale (divided by scale_factor here).
            generator: RNG for the multinomial draws (None = global RNG).
            temperature: softmax temperature (official 1.0).
            max_length: token cap incl. <BOS>/<EOS> (default config.max_length = 30).
            official_sampling: use the slow per-row official sampler (RNG-stream compatible).
            postprocess: remove repeated adjacent words and repeated n-grams (CoDi's decode does).
        Returns:
            B strings.
        """
        sampler = self.sample_ids_official if official_sampling else self.sample_ids
        ids = sampler(z / self.scale_factor, generator=generator, temperature=temperature, max_length=max_length)
        texts = [self.ids_to_text(row) for row in ids]
        return [postprocess_text(t) for t in texts] if postprocess else texts
