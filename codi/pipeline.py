"""`CoDiPipeline`: any-to-any generation as a numbered recipe over a `CoDiModel`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from codi.components import needed_components, stages_for
from codi.conditions import (
    Condition,
    InputError,
    audio_tensor,
    collect_conditions,
    image_tensor,
    load_condition_value,
    parse_modality,
    video_tensor,
)
from codi.media import AudioClip, VideoClip
from codi.modality import ALL_MODALITIES, Modality
from codi.model import CoDiModel
from codi.models.joint import CouplingMode, mix_conditions
from codi.residency import ComponentManager, peak_memory, reset_peak_memory, tensor_bytes
from codi.sampling import (
    Prediction,
    Sampler,
    combine_guidance,
    guided,
    sample_ddim,
    sample_dpm,
    split_prediction,
)

ProgressCallback = Callable[[int, int], None]  # (steps done, total steps)

MAX_SEED = 2**32 - 1
MAX_GUIDANCE = 50.0


@dataclass
class GenerationResult:
    """What one call produced: per output a list over samples, plus the parameters and timings."""

    texts: list[str] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    videos: list[VideoClip] = field(default_factory=list)
    audios: list[AudioClip] = field(default_factory=list)
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)  # source, components used/loaded/resident, peak memory

    @property
    def text(self) -> str | None:
        return self.texts[0] if self.texts else None

    @property
    def image(self) -> Image.Image | None:
        return self.images[0] if self.images else None

    @property
    def video(self) -> VideoClip | None:
        return self.videos[0] if self.videos else None

    @property
    def audio(self) -> AudioClip | None:
        return self.audios[0] if self.audios else None


def parse_outputs(outputs: Iterable[str | Modality] | str | None) -> list[Modality]:
    """['image', 'audio'] or 'image,audio' -> modalities in canonical order (text, image, video, audio)."""
    if outputs is None:
        outputs = []
    if isinstance(outputs, str):
        outputs = [o for o in outputs.split(",") if o.strip()]
    if not isinstance(outputs, Iterable):
        raise InputError(f"outputs must be a list of text, image, video, audio, got {type(outputs).__name__}")
    chosen = {parse_modality(o) for o in outputs}
    if not chosen:
        raise InputError("choose at least one output: text, image, video or audio")
    return [m for m in ALL_MODALITIES if m in chosen]


class NotEnoughMemoryError(MemoryError):
    """The device ran out of memory for a request; the message says what to change. The pipeline stays usable."""


class CoDiPipeline:
    """Any-to-any generation with a CoDi model: compose conditions, sample jointly, decode."""

    def __init__(
        self,
        model: CoDiModel,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        source: str = "",
        components: ComponentManager | None = None,
    ) -> None:
        """Args:
        model: a loaded model, or one whose parameters wait on the meta device for `components` to load them.
        components: loads the model's components on demand (default: `model` is fully loaded).
        """
        self.model = model.eval()
        self.device = torch.device(device)
        self.dtype = dtype
        self.source = source
        self.components = components or ComponentManager(model, None, self.device, dtype)

    @property
    def config(self):
        return self.model.config

    @classmethod
    def from_preset(
        cls,
        name: str = "tiny",
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        max_memory: float | None = None,
        offload: str = "none",
        lazy: bool | None = None,
        compile: bool = False,
        **kwargs: Any,
    ) -> CoDiPipeline:
        """Builds a pipeline from a preset name ('tiny', 'official') or a checkpoint folder.

        Args:
            name: 'tiny' (embedded, offline), 'official' (released weights, downloaded once), a converted folder, or
                a Hub repository id holding one (downloaded once into the Hugging Face cache).
            device: where to run ('cpu', 'cuda', 'cuda:1', ...); default CPU.
            dtype: torch dtype or 'float32'/'float16'/'bfloat16'; default float32. 'auto' (the CLI's and the
                app's default): float32 for a model under 1 GB of float32 weights (tiny), else half precision,
                float16 on a GPU and bfloat16 on a CPU (the released model: 11.6 instead of 23 GB of weights).
            max_memory: GB the loaded components may take; the least recently used are evicted to stay under it.
            offload: 'none', or 'model' (components wait on the CPU; each goes to `device` only while it runs).
            lazy: load each component on its first use (default: when the model is over 1 GB; smaller models
                load whole at once).
            compile: `torch.compile` the UNets (each new latent shape compiles once, slowly; later steps run
                faster; on a CPU it needs a C++ compiler).
            **kwargs: `strict_keys`, `official_variant`, `cache_dir`, `allow_random`, ... (`codi.presets.open_model`).
        """
        from codi.presets import open_model, snapshot_of

        if name not in ("tiny", "official") and not _is_path(name):
            name = snapshot_of(name)  # a Hub repository holding a converted model
        if max_memory is not None and not (_real("max_memory", max_memory) > 0):
            raise InputError(f"max_memory must be a positive number of GB, got {max_memory}")
        device = check_device(device or "cpu")
        auto = dtype == "auto"
        dtype = torch.float32 if auto else _parse_dtype(dtype)
        storage = torch.device("cpu") if offload == "model" else device
        model, weights, source = open_model(name, device=storage, dtype=dtype, **kwargs)
        if auto:
            dtype = auto_dtype(model, device)
            model.to(dtype)  # parameters still on meta: free (a model loaded already is small, so float32)
        limit = None if max_memory is None else float(max_memory) * 1e9
        manager = ComponentManager(model, weights, device, dtype, max_memory=limit, offload=offload)
        if weights is not None and (lazy is False or (lazy is None and sum(manager.sizes.values()) < 1e9)):
            manager.load_all()
        if compile:
            for unet in model.diffusion.children():
                unet.compile(dynamic=False)  # one graph per latent shape (dynamic shapes fail in conv lowering)
        return cls(model, device=device, dtype=dtype, source=source, components=manager)

    @classmethod
    def from_pretrained(
        cls, path_or_repo: str | Path, device: torch.device | str | None = None, **kwargs: Any
    ) -> CoDiPipeline:
        """A pipeline from a folder written by `save_pretrained` / `python -m codi convert`, or a Hugging Face
        repository holding one (downloaded with huggingface_hub: config.json and *.safetensors)."""
        return cls.from_preset(str(path_or_repo), device=device, **kwargs)

    def save_pretrained(self, folder: str | Path, dtype: torch.dtype | str | None = None) -> list[Path]:
        """Writes config.json + one safetensors file per component (our key names) for `from_pretrained`;
        components not loaded are loaded one at a time and evicted again. Returns the files written."""
        from codi.presets import save_components

        return save_components(self.components, folder, _parse_dtype(dtype) if dtype is not None else None)

    # -- 1. check inputs -------------------------------------------------------------------------
    def _check(
        self,
        conditions: list[Condition],
        outputs: list[Modality],
        steps: int,
        guidance: float,
        num_samples: int,
        text_temperature: float,
        partner_weight: float = 0.0,
    ) -> None:
        for m in outputs:
            if not self.model.can_generate(m):
                raise InputError(f"this model cannot generate {m.value}")
        if not 1 <= steps <= 1000:
            raise InputError(f"steps must be between 1 and 1000, got {steps}")
        if not 0 <= guidance <= MAX_GUIDANCE:  # far past any useful scale the guided latents overflow (1e20: NaN)
            raise InputError(f"guidance scale must be between 0 and {MAX_GUIDANCE:g}, got {guidance}")
        if not 1 <= num_samples <= 16:
            raise InputError(f"number of samples must be between 1 and 16, got {num_samples}")
        if not 0.01 <= text_temperature <= 10.0:  # below ~1e-38 the logits / temperature overflow float32
            raise InputError(f"text_temperature must be between 0.01 and 10, got {text_temperature}")
        if not 0.0 <= partner_weight <= 100.0:
            raise InputError(f"partner weight must be in [0, 100], got {partner_weight}")
        if partner_weight > 0 and len(outputs) > 1:
            try:
                self.model.diffusion.check_partner_composition(self.config.clip.projection_dim)
            except ValueError as e:
                raise InputError(f"{e}; set the partner weight to 0") from None

    # -- 2. encode conditions ----------------------------------------------------------------------
    @torch.no_grad()
    def encode_condition(
        self, c: Condition, generator: torch.Generator | None = None, official_preprocessing: bool = False
    ) -> tuple[Tensor, Tensor]:
        """One condition -> (embedding [1,1,D], its unconditional embedding [1,1,D])."""
        m, media, dev = self.model, self.config.media, self.device
        if c.modality is Modality.TEXT:
            return m.clip.encode_text([c.value]), m.clip.unconditional_text(1)
        # media stay float32: each encoder preprocesses in float32 and casts after (the released code feeds float32)
        if c.modality is Modality.IMAGE:
            x = image_tensor(c.value, media, generator, official_preprocessing).to(dev)
            return m.clip.encode_image(x), m.clip.unconditional_image(1)
        if c.modality is Modality.VIDEO:
            x = video_tensor(c.value, media).to(dev)
            return m.clip.encode_video(x), m.clip.unconditional_video(1, x.shape[2])
        wave = audio_tensor(c.value, media, m.clap.sample_rate_in).to(dev)
        crop = "random" if official_preprocessing else "center"
        return m.clap.encode_audio(wave, crop=crop, generator=generator), m.clap.unconditional(1, wave.shape[-1])

    def encode_conditions(
        self,
        conditions: list[Condition],
        generator: torch.Generator | None = None,
        official_preprocessing: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Mixed context and unconditional context, [1,1,D] each; no inputs -> empty-prompt context."""
        if not conditions:
            empty = self.model.clip.unconditional_text(1)
            return empty, None
        pairs = [self.encode_condition(c, generator, official_preprocessing) for c in conditions]
        weights = [c.weight for c in conditions]
        cond = mix_conditions([p[0] for p in pairs], weights)
        uncond = mix_conditions([p[1] for p in pairs], weights)
        return cond, uncond

    # -- 3-5. timesteps, latents, denoise ----------------------------------------------------------
    def initial_noise(self, outputs: list[Modality], num_samples: int, seed: int) -> dict[Modality, Tensor]:
        """Gaussian noise per output from a CPU generator seeded per modality (same seed, same noise,
        on every device, whatever else is generated with it)."""
        noise = {}
        for m in outputs:
            g = torch.Generator().manual_seed(seed * 4 + ALL_MODALITIES.index(m))
            shape = (num_samples, *self.model.latent_shape(m))
            noise[m] = torch.randn(shape, generator=g, dtype=torch.float32).to(self.device, self.dtype)
        return noise

    def _denoiser(
        self, cond: Tensor, uncond: Tensor | None, guidance: float, coupling: CouplingMode, partner_weight: float
    ):
        b = cond.shape[0]
        diffusion, kind = self.model.diffusion, Prediction(self.config.schedule.prediction)
        alphas = self.model.alphas_cumprod

        def leader_env(modality: Modality, x: Tensor, t: Tensor, out: Tensor) -> Tensor:
            """The environment of the leader's clean latent as this step predicts it (guided), read at t = 0."""
            if out.shape[0] == 2 * b:  # rows [uncond; cond] of the shared latent: one guided prediction
                out = combine_guidance(*out.chunk(2), guidance)  # [B, ...]
            a_t = alphas[int(t[0])].to(device=x.device, dtype=x.dtype)  # one step for every row
            x0 = split_prediction(out, x, a_t, kind)[0]  # [B, ...]
            return diffusion.unet_for(modality).environment(x0, torch.zeros_like(t))  # [B, 1, C_env], both halves

        def predict(x, t, context):
            w = torch.full((context.shape[0],), float(partner_weight), device=context.device)  # [B] or [2B]
            if context.shape[0] == 2 * b:  # guided: rows [uncond; cond], partners join the condition only
                w[:b] = 0.0
            return diffusion(x, t, context, mode=coupling, partner_weight=w, leader_env=leader_env)

        return guided(predict, cond, uncond, guidance)

    @torch.no_grad()
    def __call__(
        self,
        inputs: Mapping[str | Modality, Any] | Iterable[tuple[str | Modality, Any]] | None = None,
        outputs: Iterable[str | Modality] | str = ("image",),
        weights: Mapping[str | Modality, float | list[float]] | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        sampler: str | Sampler | None = None,
        coupling: str | CouplingMode | None = None,
        partner_weight: float | None = None,
        num_samples: int = 1,
        text_temperature: float | None = None,
        official_timestep_grid: bool = False,
        official_preprocessing: bool = False,
        progress: ProgressCallback | None = None,
    ) -> GenerationResult:
        """Generates every requested output jointly from any combination of inputs.

        Args:
            inputs: {'text': str, 'image': PIL/array/path, 'video': path/frames, 'audio': path/(wave, rate)};
                a modality may map to a list of values (e.g. two images). Empty = unconditional generation.
            outputs: any non-empty subset of text, image, video, audio.
            weights: mixing weight per input modality (or a list per value); normalised to sum 1.
            steps: sampler steps (exactly this many; `official_timestep_grid=True` gives the released grid,
                which runs more steps when `steps` does not divide 1000).
            guidance_scale: classifier-free guidance; 1.0 disables the unconditional pass.
            seed: noise seed (random when None; the result records it).
            sampler: 'ddim' (official) or 'dpm' (DPM-Solver++, fewer steps).
            coupling: 'official' (each output attends to its own environment vector, as released) or 'paper'
                (each output attends to the other outputs' environment vectors).
            partner_weight: weight of the other outputs' environment vectors in each output's condition when
                several outputs are generated (the user's inputs weigh 1 together; 0 = CoDi as published). Needs
                environments trained into the prompt space (the tiny model's; not the released weights).
            num_samples: samples per call (batch).
            text_temperature: softmax temperature of the text decoder (the official code samples at 1; lower
                is closer to the most likely caption).
            official_preprocessing: random image crop/flip and random audio crop, as the released code does.
            progress: called with (steps done, total) after each step.
        Returns:
            a GenerationResult.
        """
        t0 = time.perf_counter()
        d = self.config.defaults
        steps = _whole("steps", steps if steps is not None else d.steps)
        num_samples = _whole("num_samples", num_samples)
        guidance = _real("guidance_scale", guidance_scale if guidance_scale is not None else d.guidance_scale)
        sampler = _choice(Sampler, "sampler", sampler or d.sampler)
        coupling = _choice(CouplingMode, "coupling", coupling or d.coupling)
        partner = _real("partner_weight", partner_weight if partner_weight is not None else d.partner_weight)
        temperature = _real(
            "text_temperature", text_temperature if text_temperature is not None else d.text_temperature
        )
        seed = _whole("seed", seed) if seed is not None else int(torch.randint(0, MAX_SEED, (1,)).item())
        if not 0 <= seed <= MAX_SEED:
            raise InputError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
        # 1. check inputs
        outs = parse_outputs(outputs)
        conditions = collect_conditions(inputs, weights)
        self._check(conditions, outs, steps, guidance, num_samples, temperature, partner)
        if sampler is Sampler.DDIM:
            try:
                self.config.schedule.timesteps(steps, official_timestep_grid)
            except ValueError as e:
                raise InputError(str(e)) from None
        for c in conditions:
            c.value = load_condition_value(c, self.config.media)
        stages = stages_for([c.modality for c in conditions], outs)
        reset_peak_memory(self.device)
        self.components.take_loaded()
        loading = self.components.load_seconds  # weights read during this call, by phase
        with self._out_of_memory_advice(outs, num_samples), flush_denormals(self.device):
            gen = torch.Generator().manual_seed(seed)
            # 2. encode conditions
            with self.components.acquire(stages["encode"]):
                cond, uncond = self.encode_conditions(conditions, gen, official_preprocessing)
            cond = cond.repeat(num_samples, 1, 1)
            uncond = uncond.repeat(num_samples, 1, 1) if uncond is not None else None
            t1, l1 = time.perf_counter(), self.components.load_seconds
            # 3. timesteps and 4. latents
            noise = self.initial_noise(outs, num_samples, seed)
            denoiser = self._denoiser(cond, uncond, guidance, coupling, partner)  # one output: unused
            callback = (lambda i, n, t: progress(i + 1, n)) if progress else None
            # 5. denoise
            # inference mode (not only no_grad): no version counters or view tracking, ~4 % of a tiny joint call
            with self.components.acquire(stages["denoise"]), torch.inference_mode():
                if sampler is Sampler.DDIM:
                    schedule = self.config.schedule
                    ts = schedule.timesteps(steps, official_timestep_grid)
                    alphas = self.model.alphas_cumprod
                    latents = sample_ddim(denoiser, noise, alphas, ts, callback, schedule.prediction)
                else:
                    latents = sample_dpm(denoiser, noise, self.config.schedule, steps, callback)
            t2, l2 = time.perf_counter(), self.components.load_seconds
            # 6. decode
            with self.components.acquire(stages["decode"]):
                result = self._decode(latents, torch.Generator().manual_seed(seed + 1), temperature)
            t3 = time.perf_counter()
        result.seed = seed
        result.params = {
            "inputs": [[c.modality.value, _describe(c.value)] for c in conditions],
            "weights": [[c.modality.value, c.weight] for c in conditions],
            "outputs": [m.value for m in outs],
            "steps": steps,
            "guidance_scale": guidance,
            "seed": seed,
            "sampler": sampler.value,
            "coupling": coupling.value,
            "partner_weight": partner,
            "num_samples": num_samples,
            "text_temperature": temperature,
            "official_timestep_grid": official_timestep_grid,
            "official_preprocessing": official_preprocessing,
            "model": self.config.name,
        }
        result.timings = {"encode_s": t1 - t0, "denoise_s": t2 - t1, "decode_s": t3 - t2, "total_s": t3 - t0}
        # the phases include loading components on first use; the sampler's own time leaves it out
        result.timings |= {"load_s": self.components.load_seconds - loading, "sample_s": (t2 - t1) - (l2 - l1)}
        result.model = self.model_report(needed_components(stages))
        return result

    @contextmanager
    def _out_of_memory_advice(self, outputs: list[Modality], num_samples: int) -> Iterator[None]:
        """Turns the device running out of memory into a NotEnoughMemoryError that says what to change, after
        freeing what the failed call held, so the next request starts clean."""
        try:
            yield
        except torch.OutOfMemoryError:
            pass
        else:
            return
        self._free_device_memory()
        raise NotEnoughMemoryError(
            f"the {self.device.type} ran out of memory for {'+'.join(m.value for m in outputs)} with "
            f"{num_samples} sample(s) in {str(self.dtype).removeprefix('torch.')}. Try fewer samples or "
            "outputs, `--offload model` (components wait on the CPU), `--max-memory GB`, or float16 on a GPU"
        )

    def model_report(self, used: list[str] | None = None) -> dict[str, Any]:
        """The model section of result.json: source, components used, loaded by this call and resident, the
        peak memory of the call, and the checkpoint keys skipped or overridden while loading."""
        c = self.components
        report: dict[str, Any] = {
            "name": self.config.name,
            "source": self.source,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "offload": c.offload,
            "max_memory_gb": None if c.max_memory is None else round(c.max_memory / 1e9, 3),
            "components_used": used or [],
            "components_loaded": c.take_loaded(),
            "components_resident": list(c.resident),
            "resident_gb": round(c.resident_bytes() / 1e9, 3),
            "peak_memory": peak_memory(self.device),
        }
        if c.source is not None:
            report["checkpoint_keys"] = c.source.report.to_json()
        return report

    def _free_device_memory(self) -> None:
        """After an out-of-memory error: drop cached blocks so the next request starts clean."""
        import gc

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _decode(
        self, latents: dict[Modality, Tensor], text_generator: torch.Generator, temperature: float = 1.0
    ) -> GenerationResult:
        from codi.models.vae import to_uint8

        media = self.config.media
        r = GenerationResult()
        for m, z in latents.items():
            if m is Modality.TEXT:
                r.texts = list(self.model.decode(m, z, generator=text_generator, temperature=temperature))
            elif m is Modality.IMAGE:
                arr = to_uint8(self.model.decode(m, z).float()).cpu().numpy()  # [B,H,W,3]
                r.images = [Image.fromarray(a) for a in arr]
            elif m is Modality.VIDEO:
                arr = to_uint8(self.model.decode(m, z).float()).cpu().numpy()  # [B,F,H,W,3]
                r.videos = [VideoClip(frames=a, fps=media.video_fps) for a in arr]
            else:
                wave = self.model.decode(m, z).float().cpu().numpy()  # [B,1,L]
                vae = self.model.audioldm
                n = z.shape[2] * vae.downsample * vae.hop_length  # mel frames x hop: 163840 for the official
                sr = vae.sample_rate
                r.audios = [AudioClip(waveform=w.reshape(-1)[:n].astype(np.float32), sample_rate=sr) for w in wave]
        return r


def denormals_flushed() -> bool:
    """Whether this thread's CPU flushes subnormal floats to zero (torch has a setter but no getter: a subnormal
    times one comes out zero exactly when it does)."""
    return bool((torch.tensor([1e-39], dtype=torch.float32) * 1.0).item() == 0.0)


@contextmanager
def flush_denormals(device: torch.device) -> Iterator[None]:
    """Subnormal floats flushed to zero on the CPU for the block only, as the caller had it afterwards.

    Subnormals (which small random or trained nets produce) slow CPU math ~100x; flushing them changes results by
    < 1e-38. The setting is the calling thread's (threads started inside the block inherit it)."""
    if device.type != "cpu" or denormals_flushed():
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _whole(name: str, value: Any) -> int:
    """An integer argument: ints (and 2.0) pass; 2.7, "2", True and the like are refused, never rounded."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a whole number, got {type(value).__name__} {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)  # ranges are checked by the caller (an int past float range included)
    if not math.isfinite(value) or not float(value).is_integer():
        raise InputError(f"{name} must be a whole number, got {value}")
    return int(value)


def _real(name: str, value: Any) -> float:
    """A finite real argument: ints and floats pass; "high", [0], True, NaN and inf are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int past float range
        raise InputError(f"{name} is too large to be a number of this kind, got {len(str(value))} digits") from None
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {value}")
    return number


def _choice(kind: type, name: str, value: Any) -> Any:
    """One of an Enum's values, or an InputError listing them."""
    try:
        return kind(value)
    except (ValueError, TypeError):
        raise InputError(f"{name} must be one of {', '.join(k.value for k in kind)}, got {value!r}") from None


def _is_path(name: str) -> bool:
    try:
        return Path(name).exists()
    except (OSError, ValueError):  # a name the OS refuses (over 255 bytes, a NUL byte)
        raise InputError(f"--model {name[:40]}...: not a model name, a folder or a Hub repository") from None


def check_device(device: torch.device | str) -> torch.device:
    """The device, or an InputError saying why it cannot be used (unknown name, no such GPU) before any loading."""
    try:
        device = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {str(device)!r}: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {device}: no CUDA GPU is available here (torch {torch.__version__}); use cpu")
        if device.index is not None and device.index >= count:
            raise InputError(f"device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("device mps: Apple's Metal backend is not available here; use cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {device}: CoDi runs on cpu, cuda, cuda:N or mps")
    return device


def _describe(value: Any) -> Any:
    """A JSON-friendly description of an input value for result.json."""
    if isinstance(value, str):
        return value
    if isinstance(value, Image.Image):
        return {"type": "image", "size": list(value.size)}
    if isinstance(value, VideoClip):
        return {"type": "video", "frames": len(value.frames), "fps": value.fps}
    if isinstance(value, AudioClip):
        return {"type": "audio", "seconds": round(value.seconds, 3), "sample_rate": value.sample_rate}
    return str(type(value).__name__)


AUTO_FLOAT32_BYTES = 1e9  # models under this many bytes of float32 weights stay in float32 under dtype 'auto'


def auto_dtype(model: torch.nn.Module, device: torch.device) -> torch.dtype:
    """What dtype 'auto' means for `model` (parameters on meta or loaded) on `device`: float32 for a small model
    (the tiny one: 0.1 GB), else half precision: float16 on a GPU, bfloat16 on a CPU (float16 kernels are slow on
    CPUs and its range is short)."""
    if tensor_bytes(list(model.parameters()), torch.float32) < AUTO_FLOAT32_BYTES:
        return torch.float32
    return half_dtype(device)


def half_dtype(device: torch.device | str) -> torch.dtype:
    """The half precision 'auto' gives a big model on `device`: bfloat16 on a CPU, float16 elsewhere."""
    return torch.bfloat16 if torch.device(device).type == "cpu" else torch.float16


def _parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16")
    return names[dtype]
